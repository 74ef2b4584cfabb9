"""The demo's one picture: a row per adapter, its images upscaled (nearest, so pixels stay pixels) under a
caption saying what each request asked for."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SCALE = 3  # 64x64 images are shown 192x192
PAD = 8  # around every cell and row
TITLE_H = 18  # the grid's title line
HEADER_H = 16  # a row's header: the adapter, its kind, the prompt
CAPTION_H = 14  # a cell's caption: what was asked
BACKGROUND, INK, MUTED = (255, 255, 255), (20, 20, 20), (90, 90, 90)


@dataclass(frozen=True)
class GridRow:
    title: str
    cells: Sequence[tuple[str, bytes]]  # (caption, PNG bytes)


def grid_size(columns: Sequence[int], image_size: tuple[int, int], scale: int = SCALE) -> tuple[int, int]:
    """(width, height) of a grid whose rows hold `columns[i]` images of `image_size` each."""
    cell_w, cell_h = image_size[0] * scale, image_size[1] * scale
    width = PAD + max(max(columns, default=1), 1) * (cell_w + PAD)
    height = PAD + TITLE_H + len(columns) * (HEADER_H + CAPTION_H + cell_h + PAD)
    return width, height


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, cut with an ellipsis to `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def render(title: str, rows: Sequence[GridRow], scale: int = SCALE) -> Image.Image:
    images = [[(caption, Image.open(io.BytesIO(png)).convert("RGB")) for caption, png in row.cells] for row in rows]
    first = next((image for row in images for _, image in row), None)
    image_size = first.size if first is not None else (64, 64)
    cell_w, cell_h = image_size[0] * scale, image_size[1] * scale
    width, height = grid_size([len(row) for row in images], image_size, scale)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((PAD, PAD), _fit(draw, title, font, width - 2 * PAD), fill=INK, font=font)
    y = PAD + TITLE_H
    for row, cells in zip(rows, images, strict=True):
        draw.text((PAD, y), _fit(draw, row.title, font, width - 2 * PAD), fill=INK, font=font)
        for i, (caption, image) in enumerate(cells):
            x = PAD + i * (cell_w + PAD)
            draw.text((x, y + HEADER_H), _fit(draw, caption, font, cell_w), fill=MUTED, font=font)
            if image.size != image_size:  # a size unlike the first image's: brought to it, so the grid stays even
                image = image.resize(image_size, Image.Resampling.NEAREST)
            canvas.paste(image.resize((cell_w, cell_h), Image.Resampling.NEAREST), (x, y + HEADER_H + CAPTION_H))
        y += HEADER_H + CAPTION_H + cell_h + PAD
    return canvas


def write(path: Path, title: str, rows: Sequence[GridRow], scale: int = SCALE) -> Image.Image:
    canvas = render(title, rows, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return canvas
