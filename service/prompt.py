"""Prompt syntax the service understands on top of plain text.

- A1111 extra-network tags `<lora:name>` / `<lora:name:0.8>` (also `<lyco:...>`, `<vpt:...>`): removed
  from the text, the named adapter of the tenant is applied with that weight.
- Textual-inversion tokens (`<my-style>`) stay in the text: the text encoder splices the vectors of the
  tenant's embedding that defines them (matched literally, as diffusers' added tokens are).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from service.stores.base import AdapterMeta

TAG = re.compile(r"<(lora|lyco|vpt):([^:<>]+)(?::([^<>]*))?>", re.IGNORECASE)


class PromptError(ValueError):
    """A tag the user wrote that cannot be applied; the message quotes it."""


def extract_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """(prompt without tags, [(adapter name, weight)]) in the order written."""
    found: list[tuple[str, float]] = []
    for match in TAG.finditer(prompt):
        name, raw_weight = match.group(2).strip(), match.group(3)
        weight = 1.0
        if raw_weight is not None:
            try:
                weight = float(raw_weight)
            except ValueError:
                raise PromptError(f"{match.group(0)!r}: the weight must be a number, as in <lora:{name}:0.8>") from None
            if not math.isfinite(weight):
                raise PromptError(f"{match.group(0)!r}: the weight must be a finite number")
        found.append((name, weight))
    text = " ".join(TAG.sub(" ", prompt).split()) if found else prompt
    return text, found


def embeddings_used(texts: Iterable[str], metas: Iterable[AdapterMeta]) -> list[AdapterMeta]:
    """The tenant's textual-inversion adapters whose tokens occur in any of `texts`."""
    texts = [t for t in texts if t]
    return [
        m for m in metas if m.kind == "textual_inversion" and any(token in text for token in m.tokens for text in texts)
    ]
