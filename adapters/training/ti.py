"""Textual inversion: n trainable vectors for a new token, spliced into `inputs_embeds` on the host.

The tokenizer and the embedding table are never touched (`adapters.textual_inversion`): each caption is
laid out by `build_inputs_embeds` with NaN stand-ins for the token's vectors, and the trainable vectors
are put where the stand-ins are, so the layout (BOS, truncation, padding) is the serving path's own and
only the vectors carry gradients. Saved as diffusers' `learned_embeds.safetensors`: `{token: [n, D]}`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from adapters.errors import AdapterError
from adapters.text_encoder import encode_inputs_embeds
from adapters.textual_inversion import build_inputs_embeds
from adapters.training.data import TrainingSet
from adapters.training.loop import EncodeText, Settings, train
from adapters.training.options import MAX_VECTORS
from adapters.types import TextualInversion


def check_token(pipe: StableDiffusionPipeline, token: str, data: TrainingSet) -> None:
    """A usable placeholder: one word, not already a word of the vocabulary, and present in the captions."""
    if not token or any(c.isspace() for c in token):
        raise AdapterError(f"--token {token!r} must be a non-empty word without spaces, e.g. '<emblem>'")
    vocab = pipe.tokenizer.get_vocab()
    if token in vocab or f"{token}</w>" in vocab:
        raise AdapterError(f"--token {token!r} is already a word of the tokenizer: pick a new one such as '<{token}>'")
    if not any(token in text for variants in data.captions for text in variants):
        raise AdapterError(f"no caption contains the token {token!r}: the captions must use it where the concept is")


def initial_vectors(pipe: StableDiffusionPipeline, init_word: str | None, count: int) -> torch.Tensor:
    """[count, D]: where the token's vectors start.

    With as many tokens in `init_word` as vectors, vector k starts at token k: a phrase spelled out over the
    vectors ("purple outlined square" for 3) starts the token where the words it replaces are. Otherwise every
    vector starts at the mean embedding of `init_word`'s tokens (or of the whole table without a word).
    """
    table = pipe.text_encoder.get_input_embeddings().weight
    ids = pipe.tokenizer(init_word, add_special_tokens=False)["input_ids"] if init_word else []
    if len(ids) == count:
        return table[ids].detach().clone()
    start = table[ids].mean(0) if ids else table.mean(0)
    return start.detach().clone().repeat(count, 1)


def spliced_text(pipe: StableDiffusionPipeline, token: str, vectors: torch.Tensor) -> EncodeText:
    """captions -> encoder_hidden_states, differentiable in `vectors`; each caption is laid out once."""
    embedding = pipe.text_encoder.get_input_embeddings()
    marker = {token: torch.full_like(vectors, float("nan"))}
    layouts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def layout(text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if text not in layouts:
            embeds = build_inputs_embeds(text, marker, pipe.tokenizer, embedding)
            positions = torch.nonzero(embeds.isnan().any(-1)).flatten()
            order = torch.arange(len(positions)) % len(vectors)  # the k-th stand-in row is vector k mod n
            layouts[text] = (embeds.nan_to_num(0.0), positions, order)
        return layouts[text]

    def encode(texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            embeds, positions, order = layout(text)
            rows.append(embeds.index_put((positions,), vectors[order]))
        return encode_inputs_embeds(pipe.text_encoder, torch.stack(rows))

    return encode


def train_ti(
    pipe: StableDiffusionPipeline,
    data: TrainingSet,
    settings: Settings,
    token: str,
    num_vectors: int = 1,
    init_word: str | None = None,
) -> tuple[TextualInversion, dict[str, float]]:
    if not 1 <= num_vectors <= MAX_VECTORS:
        raise AdapterError(f"--vectors must be 1 to {MAX_VECTORS}, got {num_vectors}")
    check_token(pipe, token, data)
    vectors = initial_vectors(pipe, init_word, num_vectors).requires_grad_(True)
    encode = spliced_text(pipe, token, vectors)
    stats = train(pipe, data, [vectors], encode, lambda x, t, h: pipe.unet(x, t, h).sample, settings)
    return TextualInversion({token: vectors.detach().clone()}), stats


def save_ti(adapter: TextualInversion, path: Path) -> None:
    save_file({token: v.contiguous() for token, v in adapter.tokens.items()}, path, metadata={"format": "pt"})
