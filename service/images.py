"""Pixels in and out of the API: PNG encoding, decoding uploaded images, OpenAI's "WxH" sizes."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
MAX_PIXELS = 4096 * 4096  # decompression-bomb guard for uploads, far above any size we generate


class ImageInputError(ValueError):
    """An uploaded image or a size string we cannot use; the message says what to send instead."""


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """ "WxH" -> (width, height); None -> the backbone's native size."""
    if size is None or size == "auto":
        return None, None
    match = SIZE.fullmatch(size.strip())
    if match is None:
        raise ImageInputError(f"size {size!r} is not WIDTHxHEIGHT (for example '64x64')")
    return int(match.group(1)), int(match.group(2))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Any format Pillow reads -> uint8 [H, W, 3] (alpha dropped, palette and grey converted)."""
    if not data:
        raise ImageInputError("the image is empty: upload a PNG or JPEG file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageInputError(f"the image is {image.width}x{image.height}; the limit is {MAX_PIXELS} pixels")
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ImageInputError(f"the image could not be read ({error}): upload a PNG or JPEG file") from error
