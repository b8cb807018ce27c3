"""The image codec: untrusted bytes in, RGB out, or a status that says what was wrong."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from genserve.common.errors import InvalidArgument, ResourceExhausted
from genserve.common.images import ImageLimits, decode_image, encode_png, fit_within, from_tensor, to_tensor

LIMITS = ImageLimits(max_pixels=1_000_000, max_bytes=2_000_000)


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels (a decompression bomb's header)."""
    data = encoded(Image.new("RGB", (4, 4), (10, 20, 30)))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(encoded(Image.new("RGB", (20, 10), (200, 100, 50)), fmt), "image", LIMITS)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert np.allclose(np.asarray(image)[5, 5], (200, 100, 50), atol=8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "image is empty"),
        (b"this is not an image at all", "not a readable image"),
        (encoded(Image.new("RGB", (8, 8)), "GIF"), "accepted formats: PNG, JPEG, WebP"),
    ],
    ids=["empty", "garbage", "gif"],
)
def test_bad_bytes_are_invalid_argument(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_image(data, "image", LIMITS)


def test_truncated_png_names_the_problem() -> None:
    data = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], "content", LIMITS)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_declaring(100_000, 100_000)  # 10 gigapixels in a few dozen bytes
    started = time.perf_counter()
    with pytest.raises(ResourceExhausted, match="the limit is 1,000,000"):
        decode_image(bomb, "image", LIMITS)
    assert time.perf_counter() - started < 0.5, "nothing may be decoded"


def test_over_the_pixel_limit_says_the_size_and_the_limit() -> None:
    with pytest.raises(ResourceExhausted, match=r"1100x1000 = 1,100,000 pixels; the limit is 1,000,000"):
        decode_image(png_declaring(1100, 1000), "style", LIMITS)


def test_over_the_byte_limit() -> None:
    with pytest.raises(ResourceExhausted, match="GENSERVE_MAX_IMAGE_BYTES"):
        decode_image(b"\x89PNG" + b"0" * 2_000_001, "image", LIMITS)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "L", "I;16", "CMYK"])
def test_other_modes_become_rgb(mode: str) -> None:
    source = Image.new("RGB", (6, 6), (0, 128, 255))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    converted = source.convert(mode) if mode != "I;16" else Image.fromarray(np.full((6, 6), 30000, np.uint16))
    image = decode_image(encoded(converted, fmt), "image", LIMITS)
    assert image.mode == "RGB" and image.size == (6, 6)


def test_transparency_is_composited_over_white() -> None:
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image = decode_image(encoded(clear), "image", LIMITS)
    assert tuple(np.asarray(image)[0, 0]) == (255, 255, 255)


def test_png_round_trip_and_determinism() -> None:
    tensor = torch.rand(1, 3, 9, 7, generator=torch.Generator().manual_seed(1))
    first, second = encode_png(tensor), encode_png(tensor)
    assert first == second
    back = to_tensor(decode_image(first, "image", LIMITS))
    assert torch.allclose(back, tensor, atol=1 / 255)
    assert from_tensor(back).size == (7, 9)


def test_fit_within_only_shrinks() -> None:
    assert fit_within(Image.new("RGB", (400, 200)), 100).size == (100, 50)
    assert fit_within(Image.new("RGB", (40, 20)), 100).size == (40, 20)
