"""Parsed adapters in their canonical, backbone-keyed form: what every file format normalizes to.

Module paths are canonical backbone names: `unet.<module path>` or `text_encoder.<module path>`, with
transformers' optional `text_model.` prefix removed (see `adapters.spec.canonical_module_name`).
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
    tokens: Mapping[str, torch.Tensor]  # token string -> vectors [n, D] (n >= 1, multi-vector tokens)
    kind: Literal["textual_inversion"] = field(default="textual_inversion", init=False)

    @cached_property
    def digest(self) -> str:
        return tensor_digest(sorted(self.tokens.items()), self.kind)


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
