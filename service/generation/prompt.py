"""Prompt syntax the service understands on top of plain text.

- A1111 extra-network tags `<lora:name>` / `<lora:name:0.8>` (also `<lyco:...>`, `<vpt:...>`): removed
  from the text, the named adapter of the tenant is applied with that weight.
- Textual-inversion tokens (`<my-style>`) stay in the text: the text encoder splices the vectors of the
  tenant's embedding that defines them, where they stand as whole tokens (`adapters.textual_inversion`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import NamedTuple

from adapters.errors import DiffplexError
from adapters.textual_inversion import token_pattern
from service.generation.params import MAX_ADAPTER_WEIGHT
from service.stores.base import AdapterMeta

TAG = re.compile(r"<(lora|lyco|vpt):([^:<>]+)(?::([^<>]*))?>", re.IGNORECASE)


class PromptError(DiffplexError, ValueError):
    """A tag the user wrote that cannot be applied; the message quotes it."""


class Tag(NamedTuple):
    """`<lora:name:0.8>`: the adapter it names, its weight, and the kind the tag asks for."""

    name: str
    weight: float
    kind: str  # "lora" (`<lora:...>` and LyCORIS' `<lyco:...>`) or "vpt"


def extract_tags(prompt: str) -> tuple[str, list[Tag]]:
    """(prompt without tags, tags) in the order written."""
    found: list[Tag] = []
    for match in TAG.finditer(prompt):
        name, raw_weight = match.group(2).strip(), match.group(3)
        kind = "vpt" if match.group(1).lower() == "vpt" else "lora"
        weight = 1.0
        if raw_weight is not None:
            try:
                weight = float(raw_weight)
            except ValueError:
                raise PromptError(f"{match.group(0)!r}: the weight must be a number, as in <lora:{name}:0.8>") from None
            # the range `adapters[].weight` has: past it a LoRA only saturates the image (1e308: NaN, all black)
            if not (math.isfinite(weight) and abs(weight) <= MAX_ADAPTER_WEIGHT):
                raise PromptError(
                    f"{match.group(0)!r}: the weight must be a number from {-MAX_ADAPTER_WEIGHT:g} "
                    f"to {MAX_ADAPTER_WEIGHT:g}"
                )
        found.append(Tag(name, weight, kind))
    text = " ".join(TAG.sub(" ", prompt).split()) if found else prompt
    return text, found


def embeddings_used(texts: Iterable[str], metas: Iterable[AdapterMeta]) -> list[AdapterMeta]:
    """The tenant's textual-inversion adapters whose tokens occur in any of `texts`, as whole tokens: the
    same rule the splice follows, so an embedding is loaded exactly when its vectors will be used."""
    embeddings = [m for m in metas if m.kind == "textual_inversion"]
    texts = [t for t in texts if t]
    # a substring search first (fast), so the regex holds the few tokens present, not all 6,400 a tenant may own
    present = {t for m in embeddings for t in m.tokens if any(t in text for text in texts)}
    if not present:
        return []
    pattern = token_pattern(present)
    found = {match.group(0) for text in texts for match in pattern.finditer(text)}
    return [m for m in embeddings if found.intersection(m.tokens)]
