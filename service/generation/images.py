"""Pixels in and out of the API: PNG encoding, decoding uploaded images, OpenAI's "WxH" sizes."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from adapters.errors import DiffplexError

# ASCII digits only: `\d` also takes "６４" (fullwidth), which int() reads as 64.
SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
FORMATS = ("PNG", "JPEG", "WEBP")  # what uploads may be; the header of each says its size before decoding
# The largest side any model here generates: 4 x the native size (GenerationRequest.validate), 2,048 for SD-1.x.
# Callers pass their model's bound; this default only protects one that does not.
MAX_SIDE = 2048


class ImageInputError(DiffplexError, ValueError):
    """An uploaded image or a size string we cannot use; the message says what to send instead."""


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """ "WxH" -> (width, height); None or "auto" -> the backbone's native size."""
    if size is None or size == "auto":
        return None, None
    match = SIZE.fullmatch(size)
    if match is None:
        raise ImageInputError(f"size {size[:32]!r} is not WIDTHxHEIGHT in ASCII digits (for example '64x64')")
    return int(match.group(1)), int(match.group(2))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes, max_side: int = MAX_SIDE) -> np.ndarray:
    """PNG, JPEG or WebP -> uint8 [H, W, 3] (alpha dropped, palette and grey converted), refused from its
    header when a side exceeds `max_side` (what the model can use) before any pixel is decoded."""
    with _open(data) as image:
        _checked_size(image, max_side)
        try:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, ValueError, Image.DecompressionBombError) as error:  # truncated or corrupt pixel data
            raise ImageInputError(f"the image could not be read ({error}): upload a PNG, JPEG or WebP file") from error


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageInputError("the image is empty: upload a PNG, JPEG or WebP file")
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise ImageInputError("the image could not be read as PNG, JPEG or WebP: upload one of those") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageInputError(f"the image could not be read ({error}): upload a PNG, JPEG or WebP file") from error


def _checked_size(image: Image.Image, max_side: int) -> tuple[int, int]:
    if max(image.width, image.height) > max_side:
        raise ImageInputError(
            f"the image is {image.width}x{image.height}; this model takes images up to {max_side}x{max_side}: "
            "resize it to the size you want generated"
        )
    return image.width, image.height
