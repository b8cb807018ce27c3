"""A tiny synthetic data set in place of MNIST, for the training runs' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.latent import data as latent_data


def _tiny_dataset(name: str, split: str, cache: Path = Path("unused")) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0 if split == "train" else 1)
    count = 256 if split == "train" else 128
    return (rng.random((count, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, count).astype(np.int64)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model store folder; training runs read the tiny data set instead of MNIST."""
    monkeypatch.setattr(latent_data, "load_dataset", _tiny_dataset)
    return tmp_path / "store"
