"""Sample photos and paintings for tests, demos and the gallery, from pinned packages.

Photos come from the scikit-image wheel on PyPI (downloaded, never installed; the images are CC0
or public domain). The painting (Munch's The Scream, 1893, public domain) comes from Debian's
`darknet` package, fetched with `apt-get download` where apt exists. Every file is checked
against its sha256 before it is written out as PNG.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from genserve.common.packages import PackageFetchError, deb_member, fetch_pinned_deb, fetch_pinned_package

SKIMAGE = ("scikit-image", "0.26.0", "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af")
DARKNET_DEB = "darknet_0.0.0+git20180914.61c9d02e-2+b4_amd64.deb"
DARKNET_VERSION = "0.0.0+git20180914.61c9d02e-2+b4"
DARKNET_SHA256 = "9ca14d36112d242a782bfed4104fa5adcd2ae8bc599ab610f42eb609ee125a01"


@dataclass(frozen=True)
class Sample:
    name: str
    source: str  # "skimage" | "darknet"
    member: str  # path inside the package
    sha256: str
    credit: str


SAMPLES = (
    Sample("chelsea", "skimage", "skimage/data/chelsea.png",
           "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
           "Chelsea the cat, photo by Stefan van der Walt, CC0 (scikit-image 0.26.0 data)"),
    Sample("coffee", "skimage", "skimage/data/coffee.png",
           "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
           "A cup of coffee, photo by Rachel Michetti, CC0 (scikit-image 0.26.0 data)"),
    Sample("astronaut", "skimage", "skimage/data/astronaut.png",
           "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
           "Eileen Collins, NASA, public domain (scikit-image 0.26.0 data)"),
    Sample("hubble", "skimage", "skimage/data/hubble_deep_field.jpg",
           "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
           "Hubble eXtreme Deep Field, NASA, public domain (scikit-image 0.26.0 data)"),
    Sample("ihc", "skimage", "skimage/data/ihc.png",
           "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
           "Immunohistochemical staining of colon tissue, no known copyright (scikit-image 0.26.0 data)"),
    Sample("scream", "darknet", "./usr/share/darknet/data/scream.jpg",
           "dcab7bae866fbb396e01ab27a9c8d2d40b3e80911dafb05a5fa18d1bac6b8d17",
           "The Scream, Edvard Munch (1893), public domain (Debian package darknet)"),
)  # fmt: skip


def _skimage_member(cache: Path, member: str) -> bytes:
    wheel = fetch_pinned_package(*SKIMAGE[:2], SKIMAGE[2], cache)
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def _darknet_deb(cache: Path) -> Path:
    return fetch_pinned_deb("darknet", DARKNET_VERSION, DARKNET_DEB, DARKNET_SHA256, cache)


def sample_bytes(name: str, cache: Path) -> tuple[Sample, bytes]:
    """The encoded file of sample `name`, read from its package and hash-checked."""
    sample = next((s for s in SAMPLES if s.name == name), None)
    if sample is None:
        raise KeyError(f"unknown sample {name!r}; samples: {', '.join(s.name for s in SAMPLES)}")
    if sample.source == "skimage":
        raw = _skimage_member(cache, sample.member)
    else:
        raw = deb_member(_darknet_deb(cache), sample.member)
    if hashlib.sha256(raw).hexdigest() != sample.sha256:
        raise PackageFetchError(f"{sample.member} does not match its pinned sha256")
    return sample, raw


def sample_image(name: str, cache: Path) -> Image.Image:
    """One sample as an RGB image (tests, benchmarks)."""
    return Image.open(io.BytesIO(sample_bytes(name, cache)[1])).convert("RGB")


def fetch_sample(name: str, dest: Path, cache: Path) -> Path:
    """Write sample `name` as dest/<name>.png, unless it is already there."""
    target = dest / f"{name}.png"
    if not target.exists():
        dest.mkdir(parents=True, exist_ok=True)
        sample_image(name, cache).save(target)
    return target
