"""Client images → the models' input: 28x28 greyscale, light strokes on a dark ground, centred like MNIST.

Any size, format or colour is accepted (through the shared codec and its limits). The image is
made greyscale; if its border is mostly light (a dark digit on paper), it is inverted, since the
models were trained on light strokes on black. The ink's bounding box is scaled to fit a 20x20
box, aspect kept, and placed in the 28x28 frame so its centre of mass is at the centre: MNIST's
own preprocessing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genserve.common.images import ImageLimits, decode_image

SIZE = 28
BOX = 20
INK_THRESHOLD = 0.1  # intensities (0..1) above this count as ink when finding the box


def to_model_input(data: bytes, field: str, limits: ImageLimits) -> torch.Tensor:
    """Encoded image bytes → (1, 28, 28) float32 in [0, 1]."""
    grey = decode_image(data, field, limits).convert("L")
    array = np.asarray(grey, dtype=np.float32) / 255.0
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    if float(border.mean()) > 0.5:
        array = 1.0 - array
    if array.shape == (SIZE, SIZE):
        return torch.from_numpy(np.ascontiguousarray(array))[None]  # already the models' frame: used as it is
    rows, cols = np.nonzero(array > INK_THRESHOLD)
    if rows.size:
        array = array[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = array.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    boxed = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS), dtype=np.float32).clip(0, 1)
    frame = np.zeros((SIZE, SIZE), dtype=np.float32)
    total = float(boxed.sum())
    if total > 0:
        ys, xs = np.indices(boxed.shape)
        centre_y, centre_x = float((ys * boxed).sum() / total), float((xs * boxed).sum() / total)
    else:
        centre_y, centre_x = (boxed.shape[0] - 1) / 2, (boxed.shape[1] - 1) / 2
    top = round(SIZE / 2 - 0.5 - centre_y)
    left = round(SIZE / 2 - 0.5 - centre_x)
    top = min(max(top, 0), SIZE - boxed.shape[0])
    left = min(max(left, 0), SIZE - boxed.shape[1])
    frame[top : top + boxed.shape[0], left : left + boxed.shape[1]] = boxed
    return torch.from_numpy(frame)[None]
