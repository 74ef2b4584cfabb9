"""The shapes world's attributes, their values, and which values backbone training never sees.

Held-out values (a star, striped fill, a night background) exist in the dataset and the judge knows
them, but the backbone is trained without them so adapters have something real to teach.
"""

from __future__ import annotations

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "diamond", "star"),
    "color": ("red", "green", "blue", "yellow", "purple"),
    "fill": ("solid", "outlined", "striped"),
    "size": ("small", "large"),
    "position": ("top left", "top right", "bottom left", "bottom right", "center"),
    "background": ("white", "gray", "black", "night"),
}

HELD_OUT: dict[str, tuple[str, ...]] = {
    "shape": ("star",),
    "fill": ("striped",),
    "background": ("night",),
}

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)


def trained_values(attribute: str) -> tuple[str, ...]:
    """Values of `attribute` that the backbone is trained on (everything but the held-out ones)."""
    held = HELD_OUT.get(attribute, ())
    return tuple(v for v in ATTRIBUTES[attribute] if v not in held)


def value_index(attribute: str, value: str) -> int:
    """Class index of `value` in the judge's head for `attribute`."""
    try:
        return ATTRIBUTES[attribute].index(value)
    except (KeyError, ValueError):
        raise ValueError(f"unknown {attribute!r} value {value!r}; known: {ATTRIBUTES.get(attribute)}") from None
