"""Textual inversion as diffusers saves it (`learned_embeds.safetensors` / `.bin`): `{token: [n, D] or [D]}`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from adapters.errors import AdapterError
from adapters.types import TextualInversion


def read_diffusers_ti(tensors: Mapping[str, torch.Tensor], token: str | None = None) -> TextualInversion:
    """`token` renames the file's (single) token, as `load_textual_inversion(..., token=...)` does."""
    if not tensors:
        raise AdapterError("textual-inversion file holds no embedding")
    if token is not None:
        if len(tensors) != 1:
            raise AdapterError(f"cannot name {len(tensors)} embeddings {token!r}: the file must hold exactly one")
        tensors = {token: next(iter(tensors.values()))}
    return TextualInversion({name: as_vectors(name, t) for name, t in tensors.items()})


def as_vectors(token: str, tensor: torch.Tensor) -> torch.Tensor:
    """[D] -> [1, D]; [n, D] unchanged; anything else is not an embedding."""
    if not token.strip() or token != token.strip() or any(c.isspace() for c in token):
        raise AdapterError(f"textual-inversion token {token!r} must be a non-empty word without spaces")
    if tensor.ndim == 1:
        return tensor[None]
    if tensor.ndim == 2 and tensor.shape[0] >= 1:
        return tensor
    raise AdapterError(f"embedding for {token!r} has shape {tuple(tensor.shape)}; expected [D] or [n, D]")
