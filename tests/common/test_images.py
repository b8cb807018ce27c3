"""The image codec: untrusted bytes in, RGB out, or a status that says what was wrong."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable

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


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(encoded(Image.new("RGB", (20, 10), (200, 100, 50)), fmt), "image", LIMITS)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert np.allclose(np.asarray(image)[5, 5], (200, 100, 50), atol=8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "image is empty"),
        (b"this is not an image at all", "not a readable image"),
        (encoded(Image.new("RGB", (8, 8)), "TIFF"), "is TIFF; accepted formats: PNG, JPEG, WebP, GIF, BMP"),
    ],
    ids=["empty", "garbage", "tiff"],
)
def test_bad_bytes_are_invalid_argument(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_image(data, "image", LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_truncated_image_names_the_problem(fmt: str) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encoded(noise, fmt)
    with pytest.raises(InvalidArgument, match=rf"truncated or corrupt \({fmt}, 64x64\)"):
        decode_image(data[: len(data) // 2], "content", LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_a_header_cut_short_is_not_a_readable_image(fmt: str) -> None:
    data = encoded(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
    with pytest.raises(InvalidArgument, match="not a readable image; send PNG, JPEG, WebP, GIF or BMP bytes"):
        decode_image(data[:12], "image", LIMITS)


def test_an_animated_gif_decodes_its_first_frame() -> None:
    first, second = Image.new("RGB", (6, 4), (200, 100, 50)), Image.new("RGB", (6, 4), (10, 250, 10))
    data = encoded(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    image = decode_image(data, "image", LIMITS)
    assert image.mode == "RGB" and image.size == (6, 4)
    assert {tuple(pixel) for pixel in np.asarray(image).reshape(-1, 3)} == {(200, 100, 50)}


def test_a_gif_transparent_colour_is_composited_over_white() -> None:
    frame = Image.new("P", (4, 2), 0)
    frame.putpalette([0, 0, 255, 255, 0, 0])
    frame.paste(1, (0, 0, 2, 2))  # left half red, right half the transparent blue
    image = decode_image(encoded(frame, "GIF", transparency=0), "image", LIMITS)
    assert tuple(np.asarray(image)[0, 0]) == (255, 0, 0) and tuple(np.asarray(image)[0, 3]) == (255, 255, 255)


def test_a_bmp_decodes_to_its_pixels() -> None:
    pixels = np.random.default_rng(2).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = decode_image(encoded(Image.fromarray(pixels), "BMP"), "image", LIMITS)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), pixels)
    grey = decode_image(encoded(Image.fromarray(pixels[:, :, 0]), "BMP"), "image", LIMITS)  # 8-bit, a palette
    assert np.array_equal(np.asarray(grey)[:, :, 1], pixels[:, :, 0])


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_declaring(100_000, 100_000)  # 10 gigapixels in a few dozen bytes
    started = time.perf_counter()
    with pytest.raises(ResourceExhausted, match="the limit is 1,000,000"):
        decode_image(bomb, "image", LIMITS)
    assert time.perf_counter() - started < 0.5, "nothing may be decoded"


def gif_declaring(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen claims width × height pixels."""
    data = encoded(Image.new("RGB", (4, 4), (10, 20, 30)), "GIF")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def bmp_declaring(width: int, height: int) -> bytes:
    """A tiny BMP whose header claims width × height pixels (its pixel rows are not there)."""
    data = encoded(Image.new("RGB", (4, 4), (10, 20, 30)), "BMP")
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def gif_frame_declaring(width: int, height: int) -> bytes:
    """A tiny GIF whose first frame (not its logical screen) claims width × height pixels."""
    data = encoded(Image.new("RGB", (4, 4), (10, 20, 30)), "GIF")
    descriptor = data.index(b",")  # the image descriptor: separator, left, top, width, height
    return data[: descriptor + 5] + struct.pack("<HH", width, height) + data[descriptor + 9 :]


@pytest.mark.parametrize(
    "declaring", [gif_declaring, gif_frame_declaring, bmp_declaring], ids=["gif", "gif-frame", "bmp"]
)
def test_a_gif_or_bmp_over_the_pixel_limit_is_refused_from_its_header(declaring: Callable[[int, int], bytes]) -> None:
    started = time.perf_counter()
    with pytest.raises(ResourceExhausted, match=r"20000x10000 = 200,000,000 pixels; the limit is 1,000,000"):
        decode_image(declaring(20_000, 10_000), "image", LIMITS)
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
