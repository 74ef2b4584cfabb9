"""Textual inversion without touching the shared tokenizer or embedding table.

diffusers' `load_textual_inversion` adds tokens to the tokenizer and rows to the embedding table, which
would make a token global to every tenant. Here a tenant's table `{token: vectors [n, D]}` is applied to
one prompt: the text between the tenant's tokens is tokenized by the shared tokenizer and looked up in
the shared embedding table, each token contributes its n vectors in place, and the sequence is cut
and padded the way CLIP's tokenizer does (BOS, at most L-2 positions, EOS, padding). The result is the
text encoder's `inputs_embeds` (token embeddings, before position embeddings are added).

Placeholders match the prompt literally and case-sensitively, as whole tokens: a placeholder that begins
(ends) with a letter, digit or `_` does not match where the prompt has one of those just before (after) it,
so `sks` is not spliced into `asks`. One bracketed by punctuation (`<my-style>`) matches anywhere, as
diffusers' added tokens do. A placeholder must not be a token the tokenizer already has (`check_tokens`,
at upload: diffusers' `load_textual_inversion` refuses those too), or it would replace that word.

SDXL has two text encoders, each with its own tokenizer and table: one prompt is spliced twice, with
`ti_table` into the first encoder's `inputs_embeds` and with `ti_table_2` into the second's, each with that
encoder's tokenizer (SDXL's second pads with "!", which `build_inputs_embeds` takes from the tokenizer given).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from adapters.errors import AdapterError
from adapters.types import TextualInversion


def ti_table(adapters: Iterable[TextualInversion]) -> dict[str, torch.Tensor]:
    """Merge one tenant's embeddings into a token table (the first text encoder's); a token owned twice is an
    error, not a silent pick."""
    return _merge(adapter.tokens for adapter in adapters)


def ti_table_2(adapters: Iterable[TextualInversion]) -> dict[str, torch.Tensor]:
    """The same for SDXL's second text encoder: each embedding's `tokens_2` (its `clip_g` vectors)."""
    tables = []
    for adapter in adapters:
        if adapter.tokens_2 is None:  # `validate` refuses these on an SDXL spec; splicing one encoder only is wrong
            raise AdapterError(
                f"embedding {', '.join(map(repr, adapter.tokens))} has no vectors for the second text encoder: "
                "an SDXL embedding carries clip_l and clip_g vectors"
            )
        tables.append(adapter.tokens_2)
    return _merge(tables)


def _merge(tables: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    table: dict[str, torch.Tensor] = {}
    for tokens in tables:
        for token, vectors in tokens.items():
            if token in table:
                raise AdapterError(f"token {token!r} is defined by two of your embeddings: rename one of them")
            table[token] = vectors
    return table


MAX_TOKEN_CHARS = 100
WORD_CHAR = re.compile(r"\w")


def token_pattern(tokens: Iterable[str]) -> re.Pattern[str]:
    """A regex finding any of `tokens` where it stands as a whole token, longest first where two overlap."""
    alternatives = []
    for token in sorted({t for t in tokens if t}, key=lambda t: (-len(t), t)):
        before = r"(?<!\w)" if WORD_CHAR.match(token[0]) else ""
        after = r"(?!\w)" if WORD_CHAR.match(token[-1]) else ""
        alternatives.append(before + re.escape(token) + after)
    return re.compile("|".join(alternatives))


def check_tokens(tokens: Iterable[str], tokenizer: Any) -> None:
    """Raise AdapterError unless every placeholder is usable in a prompt: one word of printable characters, and
    not something the tokenizer already reads as one of its own tokens (`a`, `cat`, `<|endoftext|>`): the
    embedding would silently replace that word in every prompt that uses it."""
    vocabulary = tokenizer.get_vocab()
    for token in tokens:
        if not 1 <= len(token) <= MAX_TOKEN_CHARS:
            raise AdapterError(f"a token has 1 to {MAX_TOKEN_CHARS} characters, not {len(token)}: e.g. <my-style>")
        if any(c.isspace() or not c.isprintable() for c in token):
            raise AdapterError(f"token {token!r} has spaces or control characters: use one word, e.g. <my-style>")
        pieces = tokenizer.tokenize(token)
        if token in vocabulary or len(pieces) == 1:
            example = f"<{token}>" if token.isalnum() else "<my-style>"
            raise AdapterError(
                f"token {token!r} is already in the tokenizer's vocabulary ({' '.join(pieces)}): the embedding "
                f"would replace it wherever it is written. Choose a token that is not a word, e.g. {example}"
            )


def split_prompt(prompt: str, tokens: Iterable[str]) -> list[str | tuple[str]]:
    """Text pieces and `(token,)` markers where a token stands whole, longest token first where two overlap."""
    names = {t for t in tokens if t}
    if not names:
        return [prompt]
    pattern = token_pattern(names)
    pieces: list[str | tuple[str]] = []
    position = 0
    for match in pattern.finditer(prompt):
        pieces += [prompt[position : match.start()], (match.group(0),)]
        position = match.end()
    return [*pieces, prompt[position:]]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _content(
    prompt: str, table: Mapping[str, torch.Tensor], tokenizer: Any
) -> tuple[list[int], dict[int, torch.Tensor]]:
    """The prompt's token ids between BOS and EOS, untruncated, with a stand-in id for each TI vector, and the
    vectors by position in those ids."""
    ids: list[int] = []
    spliced: dict[int, torch.Tensor] = {}  # position in `ids` -> TI vector
    for piece in split_prompt(prompt, table):
        if isinstance(piece, tuple):
            for vector in table[piece[0]]:
                spliced[len(ids)] = vector
                ids.append(_pad_id(tokenizer))  # a stand-in id, overwritten by `build_inputs_embeds`
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]
    return ids, spliced


def build_inputs_embeds(
    prompt: str,
    table: Mapping[str, torch.Tensor],
    tokenizer: Any,
    token_embedding: nn.Embedding | torch.Tensor,
    max_length: int | None = None,
) -> torch.Tensor:
    """`prompt` -> `inputs_embeds` [L, D] (L = `max_length`, default the tokenizer's, 77 for CLIP)."""
    return _embeds_and_eos(prompt, table, tokenizer, token_embedding, max_length)[0]


def _embeds_and_eos(
    prompt: str,
    table: Mapping[str, torch.Tensor],
    tokenizer: Any,
    token_embedding: nn.Embedding | torch.Tensor,
    max_length: int | None,
) -> tuple[torch.Tensor, int]:
    """`build_inputs_embeds`, and the position of the row's EOS (1 + its content, truncated to fit)."""
    weight = token_embedding.weight if isinstance(token_embedding, nn.Embedding) else token_embedding
    length = max_length or int(tokenizer.model_max_length)
    pad_id = _pad_id(tokenizer)
    ids, spliced = _content(prompt, table, tokenizer)
    content = ids[: length - 2]
    sequence = [tokenizer.bos_token_id, *content, tokenizer.eos_token_id]
    sequence += [pad_id] * (length - len(sequence))
    with torch.no_grad():
        embeds = nn.functional.embedding(torch.tensor(sequence, device=weight.device), weight).clone()
        for position, vector in spliced.items():
            if position < len(content):
                embeds[1 + position] = vector.to(embeds)
    return embeds, 1 + len(content)


def build_inputs_embeds_batch(
    prompts: Sequence[str],
    tables: Sequence[Mapping[str, torch.Tensor]],
    tokenizer: Any,
    token_embedding: nn.Embedding | torch.Tensor,
    max_length: int | None = None,
) -> torch.Tensor:
    """Row i: `prompts[i]` with `tables[i]` (each row may belong to another tenant) -> [N, L, D]."""
    return torch.stack(
        [
            build_inputs_embeds(p, t, tokenizer, token_embedding, max_length)
            for p, t in zip(prompts, tables, strict=True)
        ]
    )


def build_inputs_embeds_and_eos(
    prompts: Sequence[str],
    tables: Sequence[Mapping[str, torch.Tensor]],
    tokenizer: Any,
    token_embedding: nn.Embedding | torch.Tensor,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`build_inputs_embeds_batch` and each row's EOS position [N] (where SDXL's second encoder pools), from one
    tokenization of each prompt."""
    rows = [_embeds_and_eos(p, t, tokenizer, token_embedding, max_length) for p, t in zip(prompts, tables, strict=True)]
    return torch.stack([embeds for embeds, _ in rows]), torch.tensor([eos for _, eos in rows])
