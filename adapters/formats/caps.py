"""Limits checked on an uploaded file before anything in it is loaded."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class ReadCaps:
    max_bytes: int = 512 * MiB  # a rank-128 full SD-1.x LoRA is ~150 MiB
    max_tensors: int = 4096  # kohya files carry down/up/alpha per module: ~1,000 for SD-1.x
    max_header_bytes: int = 8 * MiB
    max_pickle_bytes: int = 4 * MiB  # only A1111 textual-inversion `.pt` files are pickles, and they are tiny
