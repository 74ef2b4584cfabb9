"""Sizes and uploaded images: ASCII "WxH" only, and an image too large for the model refused from its header,
before a pixel is decoded."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from service.generation.images import ImageInputError, decode_image, parse_size

MiB = 1 << 20


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_sizes() -> None:
    assert parse_size("64x48") == (64, 48)
    assert parse_size(None) == parse_size("auto") == (None, None)


@pytest.mark.parametrize("size", ["６４x６４", "٦٤x٦٤", "64x64\n", " 64x64", "64 x 64", "64X64", "x64", "123456x1"])
def test_sizes_are_ascii_digits_without_whitespace(size: str) -> None:
    with pytest.raises(ImageInputError, match="WIDTHxHEIGHT in ASCII digits"):
        parse_size(size)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_decode_to_rgb(fmt: str) -> None:
    pixels = decode_image(encoded(Image.new("RGBA", (32, 16), (200, 10, 10, 128)).convert("RGB"), fmt), 64)
    assert pixels.shape == (16, 32, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(ImageInputError, match="PNG, JPEG or WebP"):
        decode_image(encoded(Image.new("RGB", (8, 8)), fmt))


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = encoded(Image.new("L", (4096, 4096)))  # 16 KB of file, 48 MiB as RGB
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageInputError, match="4096x4096; this model takes images up to 256x256"):
            decode_image(bomb, 256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB, f"{peak / MiB:.1f} MiB allocated to refuse it"
    with pytest.raises(ImageInputError, match="up to 256x256"):
        decode_image(encoded(Image.new("RGB", (257, 8))), 256)  # one side over is enough
    assert decode_image(encoded(Image.new("RGB", (256, 8))), 256).shape == (8, 256, 3)


def test_unreadable_images_say_so() -> None:
    with pytest.raises(ImageInputError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageInputError, match="could not be read"):
        decode_image(b"nope")
    truncated = encoded(Image.effect_noise((64, 64), 50))[:300]
    with pytest.raises(ImageInputError, match="could not be read"):
        decode_image(truncated, 64)
