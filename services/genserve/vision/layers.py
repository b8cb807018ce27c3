"""Layer names of the backbones that need no weights to know: importable without torch."""

from __future__ import annotations

# Output channels of each conv, block by block (Simonyan & Zisserman's configuration D).
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ... relu5_3 (no pool5: nothing reads it)."""
    names: list[str] = []
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        if block > 1:
            names.append(f"pool{block - 1}")
        for conv in range(1, len(widths) + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names
