"""PromptEncoder: the unconditional-embedding cache is bounded in bytes and never changes an answer."""

from __future__ import annotations

import pytest
import torch

from adapters.packing import PackedRowCache, adapter_set_key
from service.engine.text import PromptEncoder
from service.runtime.torch_runtime import TorchRuntime

NEGATIVES = ["blue", "a red square", "", "blurry"]


def _encode(encoder: PromptEncoder, negatives: list[str | None]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    n = len(negatives)
    return encoder.encode_with_uncond(["a circle"] * n, negatives, [{}] * n, [()] * n)


@pytest.mark.parametrize("entries", [0, 1, 2, 8])
def test_uncond_answers_equal_a_plain_encoding_whatever_the_bound(torch_runtime: TorchRuntime, entries: int) -> None:
    reference = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=0)
    want = reference.encode(NEGATIVES, [{}] * len(NEGATIVES), [()] * len(NEGATIVES))
    entry_bytes = want[0].numel() * want.element_size()
    encoder = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=entries * entry_bytes)
    for _ in range(2):  # a first pass of misses, then hits where the bound kept them
        _, uncond = _encode(encoder, [*NEGATIVES, None, NEGATIVES[0]])
        assert uncond[len(NEGATIVES)] is None
        for got, expected in zip(uncond, [*want, None, want[0]], strict=True):
            assert (got is None) == (expected is None)
            if got is not None:
                torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert len(encoder.uncond_cache) == min(entries, len(NEGATIVES))
        assert encoder.uncond_cache.bytes == len(encoder.uncond_cache) * entry_bytes <= entries * entry_bytes


def test_cached_entries_do_not_hold_the_batch_tensor(torch_runtime: TorchRuntime) -> None:
    encoder = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=1 << 20)
    _encode(encoder, ["blue"] * 3 + ["red"])
    entry = encoder.uncond_cache.get(("blue", adapter_set_key(())))
    assert entry is not None and entry.untyped_storage().nbytes() == entry.numel() * entry.element_size()
