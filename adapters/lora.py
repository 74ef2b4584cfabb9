"""LoRA math for banks: per-request scales, several LoRAs concatenated along the rank, the rank buckets of calls.

`y = W x + sum_k s_k B_k A_k x = W x + [s_1 B_1 | s_2 B_2 | ...] [A_1; A_2; ...] x`, with
`s_k = alpha_k / rank_k * weight_k`: so one request's LoRAs are one LoRA of rank `sum r_k`, scales in B.
A slot's rows keep that rank; a call zero-pads every slot to one rank, the call's bucket (`rank_bucket`): zero
rows of A and columns of B add exactly nothing (adapters/packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapters.errors import AdapterError
from adapters.types import AdapterSet, LoRAAdapter, LoRALayer
from adapters.validate import RANK_SETTING

# The smallest bucket: below it the bank gathers and small matmuls cost the same whatever the rank.
MIN_RANK_BUCKET = 4


def lora_scale(layer: LoRALayer, weight: float = 1.0) -> float:
    """kohya / peft convention: alpha / rank, times the user's weight (`<lora:name:0.8>`)."""
    return layer.alpha / layer.rank * weight


def concat_layers(parts: Sequence[tuple[LoRALayer, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One module's LoRAs with user weights -> (A [sum r, d_in], B [d_out, sum r]), scales folded into B."""
    down = torch.cat([layer.down.to(torch.float32) for layer, _ in parts], dim=0)
    up = torch.cat([layer.up.to(torch.float32) * lora_scale(layer, w) for layer, w in parts], dim=1)
    return down, up


def rank_bucket(rank: int, cap: int) -> int:
    """The rank a call's banks are padded to, for the largest `rank` among its slots: the smallest power of two
    >= `rank` from MIN_RANK_BUCKET (4, 8, 16, ...), or the cap where that would pass it.

    Buckets rather than the exact rank: a call's bank shapes then take a handful of values, so the runtimes'
    per-shape plans (ONNX Runtime's allocations, TensorRT's kernels) and the bank cache are reused, while a
    call of small LoRAs never pays for a large one it does not hold (at most 2x its rank).
    """
    if not 0 <= rank <= cap:
        raise ValueError(f"rank {rank} is outside 0 to the cap {cap}")
    bucket = MIN_RANK_BUCKET
    while bucket < rank:
        bucket *= 2
    return min(bucket, cap)


def lora_rows(adapter_set: AdapterSet, max_rank: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every module the set's LoRAs touch -> its (A [r, d_in], B [d_out, r]) bank row at the set's own total
    rank r on that module (unpadded: a call pads it to its bucket). AdapterError where r exceeds `max_rank`."""
    per_module: dict[str, list[tuple[LoRALayer, float]]] = {}
    for adapter, weight in adapter_set:
        if isinstance(adapter, LoRAAdapter):
            for name, layer in adapter.layers.items():
                per_module.setdefault(name, []).append((layer, float(weight)))
    rows = {}
    for name, parts in per_module.items():
        if (total := sum(layer.rank for layer, _ in parts)) > max_rank:
            raise AdapterError(
                f"the request's LoRAs need rank {total} on {name} together; this export allows {max_rank}: "
                f"use fewer or lower-rank LoRAs in one request, or ask the operator to raise the cap ({RANK_SETTING})"
            )
        rows[name] = concat_layers(parts)
    return rows


def delta_weight(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The dense weight change `B @ A` [d_out, d_in] a (scaled) LoRA adds: for merging and for tests."""
    return up @ down
