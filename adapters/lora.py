"""LoRA math for banks: per-request scales, several LoRAs concatenated along the rank, rank padding.

`y = W x + sum_k s_k B_k A_k x = W x + [s_1 B_1 | s_2 B_2 | ...] [A_1; A_2; ...] x`, with
`s_k = alpha_k / rank_k * weight_k`: so one request's LoRAs are one LoRA of rank `sum r_k`, scales in B.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapters.errors import AdapterError
from adapters.types import AdapterSet, LoRAAdapter, LoRALayer


def lora_scale(layer: LoRALayer, weight: float = 1.0) -> float:
    """kohya / peft convention: alpha / rank, times the user's weight (`<lora:name:0.8>`)."""
    return layer.alpha / layer.rank * weight


def concat_layers(parts: Sequence[tuple[LoRALayer, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One module's LoRAs with user weights -> (A [sum r, d_in], B [d_out, sum r]), scales folded into B."""
    down = torch.cat([layer.down.to(torch.float32) for layer, _ in parts], dim=0)
    up = torch.cat([layer.up.to(torch.float32) * lora_scale(layer, w) for layer, w in parts], dim=1)
    return down, up


def pad_rank(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad to rank R: the padded rows of A and columns of B add exactly nothing."""
    extra = rank - down.shape[0]
    if extra < 0:
        raise ValueError(f"rank {down.shape[0]} does not fit in {rank}")
    return torch.nn.functional.pad(down, (0, 0, 0, extra)), torch.nn.functional.pad(up, (0, extra))


def lora_rows(adapter_set: AdapterSet, rank: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every module the set's LoRAs touch -> its padded (A [R, d_in], B [d_out, R]) bank row."""
    per_module: dict[str, list[tuple[LoRALayer, float]]] = {}
    for adapter, weight in adapter_set:
        if isinstance(adapter, LoRAAdapter):
            for name, layer in adapter.layers.items():
                per_module.setdefault(name, []).append((layer, float(weight)))
    rows = {}
    for name, parts in per_module.items():
        if (total := sum(layer.rank for layer, _ in parts)) > rank:
            raise AdapterError(
                f"the request's LoRAs need rank {total} on {name} together; this export allows {rank}: "
                "use fewer LoRAs in one request"
            )
        rows[name] = pad_rank(*concat_layers(parts), rank)
    return rows


def delta_weight(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The dense weight change `B @ A` [d_out, d_in] a (scaled) LoRA adds: for merging and for tests."""
    return up @ down
