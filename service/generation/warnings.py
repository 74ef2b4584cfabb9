"""What a request asks for that the model will honour only in part: said in the answer's `warnings`, never
dropped silently. Each is a request the service still runs (a refusal would be a 4xx from plan.py).

- `<token>`s that no embedding of the tenant defines: the text encoder reads them as plain characters.
- Words the model was never trained on, for a model that ships the list of words it learned
  (`tokenizer/trained_words.json`; the embedded model does): they have no reliable effect unless an adapter
  teaches them.
- A size other than the model's native one: it draws best (and places things where asked) at that size.
- SDXL: a `negative_prompt_2` without `negative_prompt` on a model whose config zeroes the negative side
  (`force_zeros_for_empty_prompt`): diffusers then ignores it, and so does diffplex, to give diffusers' image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from models.shapes.tokenizer import TRAINED_WORDS_FILE  # beside the tokenizer's files

MAX_LISTED = 10  # words or tokens quoted in one warning
WORD = re.compile(r"[a-z]+")
ANGLE_TOKEN = re.compile(r"<[^<>\s]{1,64}>")


@lru_cache(maxsize=8)
def trained_words(tokenizer_dir: Path) -> frozenset[str] | None:
    """The words the model learned, when its tokenizer directory lists them; None: an open vocabulary."""
    path = Path(tokenizer_dir) / TRAINED_WORDS_FILE
    if not path.is_file():
        return None
    return frozenset(json.loads(path.read_text()))


def _listing(items: Iterable[str]) -> str:
    items = sorted(set(items))
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def unknown_tokens(texts: Iterable[str], defined: Iterable[str]) -> list[str]:
    """`<...>` tokens in `texts` (tags already removed) that no embedding of the tenant defines."""
    known = set(defined)
    return sorted({m.group(0) for text in texts for m in ANGLE_TOKEN.finditer(text)} - known)


def untrained_words(texts: Iterable[str], vocabulary: frozenset[str], defined: Iterable[str]) -> list[str]:
    """Words of `texts` outside `vocabulary`; embedding tokens (the tenant's, and any `<...>`) are not words."""
    tokens = set(defined)
    words: set[str] = set()
    for text in texts:
        text = ANGLE_TOKEN.sub(" ", text)
        for token in tokens:
            text = text.replace(token, " ")
        words.update(WORD.findall(text.lower()))
    return sorted(words - vocabulary)


def request_warnings(
    texts: list[str],
    defined_tokens: Iterable[str],
    vocabulary: frozenset[str] | None,
    size: tuple[int | None, int | None],
    native: int,
) -> list[str]:
    """The warnings of one request: `texts` its prompt (tags removed) and negative prompt, `defined_tokens`
    every token of the tenant's embeddings, `size` the (width, height) it asked for (None: native)."""
    defined = list(defined_tokens)
    out = []
    if unknown := unknown_tokens(texts, defined):
        out.append(
            f"{_listing(unknown)}: not a token of any of your embeddings, so the model reads it as plain text "
            "(GET /v1/adapters lists your embeddings and their tokens)"
        )
    if vocabulary is not None and (words := untrained_words(texts, vocabulary, defined)):
        out.append(
            f"words the model was not trained on: {_listing(words)}. They have no reliable effect unless one of "
            "your adapters teaches them (GET /v1/models lists the words the model knows)"
        )
    width, height = size
    if (width is not None and width != native) or (height is not None and height != native):
        out.append(
            f"size {width or native}x{height or native} is not the model's native {native}x{native}: it draws best, "
            "and places and sizes things as asked, at its native size"
        )
    return out


def zeroed_negative_warning(negative_prompt: str | None, negative_prompt_2: str | None, zeroes: bool) -> list[str]:
    """`zeroes`: an SDXL model whose config sets `force_zeros_for_empty_prompt`."""
    if zeroes and negative_prompt is None and negative_prompt_2 is not None:
        return [
            "negative_prompt_2 has no effect without negative_prompt on this model: its config "
            "(force_zeros_for_empty_prompt) makes the negative embeddings zeros when no negative_prompt is given, as "
            "diffusers does; give negative_prompt too"
        ]
    return []
