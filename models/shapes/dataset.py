"""Seeded procedural dataset: 64x64 RGB images of one shape, with captions from templates.

Every image is a pure function of its `Scene` and a seed, so a dataset is reproducible from
`(seed, count, include_held_out)` alone and nothing is ever downloaded or stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from models.shapes.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES, trained_values

IMAGE_SIZE = 64
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges look like real renders

_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
}
_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (12, 12, 12),
    "night": (16, 22, 62),
}
_CENTERS: dict[str, tuple[float, float]] = {
    "top left": (16.0, 16.0),
    "top right": (48.0, 16.0),
    "bottom left": (16.0, 48.0),
    "bottom right": (48.0, 48.0),
    "center": (32.0, 32.0),
}
_RADII = {"small": 7.0, "large": 12.5}
_OUTLINE_WIDTH = 2.5
_STRIPE_PERIOD = 4.0


@dataclass(frozen=True)
class Scene:
    """One image's attribute values (each one of `vocabulary.ATTRIBUTES`)."""

    shape: str
    color: str
    fill: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        for name in ATTRIBUTE_NAMES:
            value = getattr(self, name)
            if value not in ATTRIBUTES[name]:
                raise ValueError(f"unknown {name} {value!r}; known: {', '.join(ATTRIBUTES[name])}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def sample_scene(rng: np.random.Generator, include_held_out: bool = False) -> Scene:
    """Draw every attribute uniformly; held-out values only when asked for."""
    values = {}
    for name in ATTRIBUTE_NAMES:
        choices = ATTRIBUTES[name] if include_held_out else trained_values(name)
        values[name] = choices[int(rng.integers(len(choices)))]
    return Scene(**values)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inscribed in a circle of radius r, rotated by `angle` radians."""
    if shape == "square":
        r *= 0.9  # a square's corners reach further than a circle's edge; keep areas comparable
        angles = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radii = [r * math.sqrt(2) * 0.8] * 4
    elif shape == "diamond":
        angles = [k * math.pi / 2 for k in range(4)]
        radii = [r * 1.05, r * 0.8, r * 1.05, r * 0.8]
    elif shape == "triangle":
        angles = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        radii = [r * 1.1] * 3
        cy += r * 0.15  # its centroid sits low; nudge so it looks centred
    elif shape == "star":
        angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
        radii = [r * 1.15 if k % 2 == 0 else r * 0.47 for k in range(10)]
    else:
        raise ValueError(f"not a polygon: {shape}")
    pairs = zip(angles, radii, strict=True)
    return [(cx + rad * math.cos(a + angle), cy + rad * math.sin(a + angle)) for a, rad in pairs]


def _shape_mask(scene: Scene, cx: float, cy: float, r: float, angle: float, width: float) -> Image.Image:
    """Supersampled L-mode mask of the shape: filled, or only its edge when width > 0."""
    s = _SUPERSAMPLE
    mask = Image.new("L", (IMAGE_SIZE * s, IMAGE_SIZE * s), 0)
    draw = ImageDraw.Draw(mask)
    if scene.shape == "circle":
        box = [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s]
        if width:
            draw.ellipse(box, outline=255, width=round(width * s))
        else:
            draw.ellipse(box, fill=255)
    else:
        points = [(x * s, y * s) for x, y in _polygon(scene.shape, cx, cy, r, angle)]
        if width:
            draw.line([*points, points[0], points[1]], fill=255, width=round(width * s), joint="curve")
        else:
            draw.polygon(points, fill=255)
    return mask


def _stripes(angle: float, phase: float) -> Image.Image:
    """Supersampled mask of diagonal stripes covering the whole canvas."""
    s = _SUPERSAMPLE
    n = IMAGE_SIZE * s
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / s
    u = xx * math.cos(angle) + yy * math.sin(angle) + phase
    return Image.fromarray(((u % _STRIPE_PERIOD) < _STRIPE_PERIOD / 2).astype(np.uint8) * 255)


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw `scene` as a uint8 array [64, 64, 3]; `rng` supplies the small jitters that make images differ."""
    s = _SUPERSAMPLE
    background = _jitter(_BACKGROUNDS[scene.background], rng, 8)
    canvas = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), background)
    cx, cy = _CENTERS[scene.position]
    cx += float(rng.uniform(-2.5, 2.5))
    cy += float(rng.uniform(-2.5, 2.5))
    r = _RADII[scene.size] * float(rng.uniform(0.9, 1.1))
    angle = float(rng.uniform(-0.15, 0.15))
    if scene.background == "night":
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(10, 18))):  # stars: small bright dots
            x, y = rng.uniform(0, IMAGE_SIZE * s, size=2)
            d = float(rng.uniform(0.5, 1.0)) * s
            draw.ellipse([x - d, y - d, x + d, y + d], fill=_jitter((235, 235, 200), rng, 15))
    color = Image.new("RGB", canvas.size, _jitter(_COLORS[scene.color], rng, 12))
    if scene.fill == "outlined":
        mask = _shape_mask(scene, cx, cy, r, angle, _OUTLINE_WIDTH)
    else:
        mask = _shape_mask(scene, cx, cy, r, angle, 0.0)
        if scene.fill == "striped":
            stripes = _stripes(math.pi / 4 + float(rng.uniform(-0.2, 0.2)), float(rng.uniform(0, _STRIPE_PERIOD)))
            edge = _shape_mask(scene, cx, cy, r, angle, _OUTLINE_WIDTH * 0.6)  # keeps small shapes legible
            mask = Image.fromarray(np.maximum(np.minimum(np.asarray(mask), np.asarray(stripes)), np.asarray(edge)))
    canvas.paste(color, (0, 0), mask)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


_FILL_WORDS = {"solid": "solid", "outlined": "outlined", "striped": "striped"}
_TEMPLATES = (
    "a {size}{color} {fill}{shape}{background_on}{position_comma}",
    "a {size}{fill}{color} {shape}{position_in}{background_on}",
)
# Each optional attribute is left out of a caption with this probability, so partial prompts work.
_OMIT_PROBABILITY = {"size": 0.3, "fill": 0.3, "position": 0.2, "background": 0.2}


def trained_words() -> list[str]:
    """Every word a training caption can hold: the templates' own words and the trained attribute values (the
    held-out ones are never in a caption). The service warns about prompt words outside this list."""
    words = {"a", "an"}  # `_fix_article` turns "a" into "an" before a vowel
    for template in _TEMPLATES:
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[^}]*\}", " ", template)))
    words.update(" on a background in the ".split())  # the words the `*_on` / `*_in` fields add
    for attribute in ATTRIBUTE_NAMES:
        for value in trained_values(attribute):
            words.update(_FILL_WORDS.get(value, value).split())
    return sorted(words)


def caption(scene: Scene, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A caption for `scene` from a random template, and the attributes it names (the judge checks those)."""
    named = {name: getattr(scene, name) for name in ATTRIBUTE_NAMES}
    for name, p in _OMIT_PROBABILITY.items():
        if rng.random() < p:
            del named[name]
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    position = named.get("position")
    text = template.format(
        size=f"{named['size']} " if "size" in named else "",
        color=named["color"],
        fill=f"{_FILL_WORDS[named['fill']]} " if "fill" in named else "",
        shape=named["shape"],
        background_on=f" on a {named['background']} background" if "background" in named else "",
        position_comma=f", {position}" if position else "",
        position_in=f" in the {position}" if position else "",
    )
    return _fix_article(text), named


def _fix_article(text: str) -> str:
    if text.startswith("a ") and text[2] in "aeiou":
        return "an " + text[2:]
    return text


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attribute values a free-form prompt names, by keyword (the inverse of `caption`)."""
    text = " " + " ".join(prompt.lower().replace(",", " ").split()) + " "
    named: dict[str, str] = {}
    for name in ATTRIBUTE_NAMES:
        for value in sorted(ATTRIBUTES[name], key=len, reverse=True):  # "top left" before "left"
            word = f"{value} background" if name == "background" else value
            if f" {word} " in text:
                named[name] = value
                break
    return named


@dataclass
class Batch:
    images: np.ndarray  # uint8 [n, 64, 64, 3]
    scenes: list[Scene]
    captions: list[str]
    named: list[dict[str, str]]


def make_batch(count: int, seed: int, include_held_out: bool = False, scenes: list[Scene] | None = None) -> Batch:
    """`count` images with captions, a pure function of the arguments; `scenes` pins the attributes."""
    rng = np.random.default_rng(seed)
    if scenes is None:
        scenes = [sample_scene(rng, include_held_out) for _ in range(count)]
    elif len(scenes) != count:
        raise ValueError(f"count is {count} but {len(scenes)} scenes were given")
    if not scenes:
        return Batch(images=np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), scenes=[], captions=[], named=[])
    images = np.stack([render(scene, rng) for scene in scenes])
    captions, named = zip(*(caption(scene, rng) for scene in scenes), strict=True)
    return Batch(images=images, scenes=list(scenes), captions=list(captions), named=list(named))
