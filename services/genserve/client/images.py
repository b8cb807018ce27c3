"""Images in and out of the client: anything image-like → bytes to send; PNG answers → `ImageResult`."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from genserve.client.errors import InvalidArgument

if TYPE_CHECKING:
    from genserve.v1 import common_pb2

# What the client accepts wherever the API takes an image: encoded bytes (PNG, JPEG, WebP...),
# a path to such a file, or a PIL image (sent as PNG).
ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image


def image_bytes(image: ImageInput, field: str = "image") -> bytes:
    """The encoded bytes to send for `image`; a PIL image is encoded as PNG, a path is read."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            return path.read_bytes()
        except OSError as error:
            raise InvalidArgument(f"{field}: cannot read {path}: {error.strerror}") from None
    raise InvalidArgument(f"{field}: expected bytes, a path or a PIL image, got {type(image).__name__}")


@dataclass(frozen=True)
class ImageResult:
    """An image the service made: the PNG file's bytes and its size in pixels."""

    png: bytes
    width: int
    height: int

    @classmethod
    def from_proto(cls, message: common_pb2.Image) -> ImageResult:
        return cls(bytes(message.data), message.width, message.height)

    def image(self) -> Image.Image:
        """Decoded as a PIL image (loaded, so the bytes may go)."""
        decoded = Image.open(io.BytesIO(self.png))
        decoded.load()
        return decoded

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG file; returns its path."""
        target = Path(path)
        target.write_bytes(self.png)
        return target
