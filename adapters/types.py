"""Parsed adapters in their canonical, backbone-keyed form: what every file format normalizes to.

Module paths are canonical backbone names: `unet.<module path>`, `text_encoder.<module path>` or (SDXL's second
text encoder) `text_encoder_2.<module path>`, with transformers' optional `text_model.` prefix removed (see
`adapters.fingerprint.canonical_module_name`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch

AdapterKind = Literal["lora", "textual_inversion", "vpt"]
VPTDepth = Literal["shallow", "deep"]


def tensor_digest(named: Iterable[tuple[str, torch.Tensor]], *extra: str) -> str:
    """sha256 over names, shapes and float32 bytes of tensors (plus `extra` strings): a stable content id."""
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for name, tensor in named:
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}\0".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class LoRALayer:
    """One module's low-rank delta: `W x + scale * up @ (down @ x)` with `scale = alpha / rank * weight`."""

    down: torch.Tensor  # A [r, d_in]
    up: torch.Tensor  # B [d_out, r]
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.down.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.up.shape[0])


@dataclass(frozen=True)
class LoRAAdapter:
    layers: Mapping[str, LoRALayer]  # canonical module path -> layer
    kind: Literal["lora"] = field(default="lora", init=False)

    @cached_property
    def digest(self) -> str:
        named = []
        for name in sorted(self.layers):
            layer = self.layers[name]
            named += [(f"{name}.down", layer.down), (f"{name}.up", layer.up)]
            named.append((f"{name}.alpha", torch.tensor(float(layer.alpha))))
        return tensor_digest(named, self.kind)


@dataclass(frozen=True)
class TextualInversion:
    """`tokens`: the (first) text encoder's vectors per token. An SDXL embedding also has `tokens_2`, the same
    tokens with the same n vectors each for the second encoder (a file's `clip_l` and `clip_g`)."""

    tokens: Mapping[str, torch.Tensor]  # token string -> vectors [n, D] (n >= 1, multi-vector tokens)
    tokens_2: Mapping[str, torch.Tensor] | None = None  # SDXL: token -> vectors [n, D2]; None: one text encoder
    kind: Literal["textual_inversion"] = field(default="textual_inversion", init=False)

    @property
    def is_sdxl(self) -> bool:
        return self.tokens_2 is not None

    @cached_property
    def digest(self) -> str:
        named = sorted(self.tokens.items())
        if self.tokens_2 is None:  # as before SDXL: stored digests of one-encoder embeddings stay valid
            return tensor_digest(named, self.kind)
        named += [(f"{token}#2", vectors) for token, vectors in sorted(self.tokens_2.items())]
        return tensor_digest(named, self.kind, "text_encoder_2")


@dataclass(frozen=True)
class VPTAdapter:
    """Visual prompt tokens: `tokens[j]` [P, d_j] for U-Net transformer block j (shallow: block 0 only)."""

    depth: VPTDepth
    tokens: Sequence[torch.Tensor]
    backbone_fingerprint: str
    kind: Literal["vpt"] = field(default="vpt", init=False)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens[0].shape[0]) if self.tokens else 0

    @cached_property
    def digest(self) -> str:
        named = [(f"vpt.{j}", t) for j, t in enumerate(self.tokens)]
        return tensor_digest(named, self.kind, self.depth, self.backbone_fingerprint)


Adapter = LoRAAdapter | TextualInversion | VPTAdapter
AdapterSet = Sequence[tuple[Adapter, float]]  # one request's adapters with their user weights
