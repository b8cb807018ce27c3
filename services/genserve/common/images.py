"""The image codec every service uses: checked decoding of untrusted bytes, PNG encoding.

Decoding refuses what it should before spending memory: the byte size first, then the pixel count
from the header (PIL reads only the header on open), and only then the pixels. Palette, alpha,
greyscale, 16-bit and CMYK images are converted to RGB (alpha composited over white). Of an animated
GIF only the first frame is read: PIL opens a GIF at its first frame, and its size (the logical
screen, grown to the first frame if that is larger) is known before any pixel is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genserve.common.errors import InvalidArgument, ResourceExhausted
from genserve.v1 import common_pb2

if TYPE_CHECKING:  # torch is imported by the tensor helpers only: the gateway decodes images without it
    import torch

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # PIL's names for them
_FORMAT_LIST = "PNG, JPEG, WebP, GIF or BMP"  # the same, for messages


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int  # width × height, checked from the header before decoding
    max_bytes: int  # size of the encoded file


def decode_image(data: bytes, field: str, limits: ImageLimits) -> Image.Image:
    """Encoded PNG/JPEG/WebP/GIF/BMP bytes → an RGB PIL image (a GIF's first frame), or a status naming `field`."""
    if not data:
        raise InvalidArgument(f"{field} is empty: send the bytes of a {_FORMAT_LIST} image")
    if len(data) > limits.max_bytes:
        raise ResourceExhausted(
            f"{field} is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes (GENSERVE_MAX_IMAGE_BYTES)"
        )
    # Image.open reads only the header; our own pixel check below runs before any decoding, with
    # a message that gives the size and the limit, so PIL's coarser guard is switched off.
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidArgument(f"{field} is not a readable image; send {_FORMAT_LIST} bytes") from None
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidArgument(f"{field} is {image.format}; accepted formats: PNG, JPEG, WebP, GIF, BMP")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"{field} has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ResourceExhausted(
            f"{field} is {width}x{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,} "
            "pixels (GENSERVE_MAX_IMAGE_PIXELS)"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError):
        raise InvalidArgument(f"{field} is truncated or corrupt ({image.format}, {width}x{height})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode → RGB; EXIF orientation applied; transparency composited over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array / peak * 255.0).astype(np.uint8), mode="L")
    return image.convert("RGB")


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink (never enlarge) so the longer side is at most `max_side`, keeping the aspect."""
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (1, 3, H, W) float32 in [0, 1]."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(tensor: torch.Tensor) -> Image.Image:
    """(1, C, H, W) or (C, H, W) float in [0, 1], C = 3 (RGB) or 1 (greyscale) → PIL image (rounded, clipped)."""
    import torch

    if tensor.dim() == 4:
        tensor = tensor[0]
    array = tensor.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    width: int
    height: int
    mime_type: str = "image/png"


def png_image(image: Image.Image | torch.Tensor) -> EncodedImage:
    """Encode as PNG, keeping the size for the reply."""
    if not isinstance(image, Image.Image):
        image = from_tensor(image)
    return EncodedImage(encode_png(image), image.width, image.height)


def encode_png(image: Image.Image | torch.Tensor) -> bytes:
    """PNG bytes; deterministic for the same pixels (no timestamps or text chunks)."""
    if not isinstance(image, Image.Image):
        image = from_tensor(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def image_message(image: EncodedImage) -> common_pb2.Image:
    """The protobuf form of an encoded image, as every reply carries it."""
    return common_pb2.Image(data=image.data, mime_type=image.mime_type, width=image.width, height=image.height)


def stored_png_message(data: bytes) -> common_pb2.Image:
    """The protobuf form of a PNG this service made and stored earlier; its size read from the header."""
    with Image.open(io.BytesIO(data)) as header:  # the header only: nothing is decoded
        width, height = header.size
    return image_message(EncodedImage(data, width, height))
