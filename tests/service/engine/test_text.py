"""PromptEncoder: the unconditional-embedding cache is bounded in bytes and never changes an answer; SDXL's
negative side follows diffusers' rules (zeros without a negative prompt where the model says so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.packing import PackedRowCache, adapter_set_key
from service.engine import GenerationRequest
from service.engine.text import PromptEncoder, TextConditioning, negative_texts
from service.runtime.base import XLInfo
from service.runtime.torch_runtime import TorchRuntime

NEGATIVES = ["blue", "a red square", "", "blurry"]


def _encode(encoder: PromptEncoder, negatives: list[str | None]) -> tuple[TextConditioning, list]:
    """ "a circle" with each negative; None: an unguided request (no uncond rows)."""
    requests = [
        GenerationRequest("a circle", seed=0, negative_prompt=n, guidance_scale=5.0 if n is not None else 1.0)
        for n in negatives
    ]
    return encoder.encode_requests(requests)


@pytest.mark.parametrize("entries", [0, 1, 2, 8])
def test_uncond_answers_equal_a_plain_encoding_whatever_the_bound(torch_runtime: TorchRuntime, entries: int) -> None:
    reference = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=0)
    want = reference.encode(NEGATIVES, [{}] * len(NEGATIVES), [()] * len(NEGATIVES)).hidden
    entry_bytes = want[0].numel() * want.element_size()
    encoder = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=entries * entry_bytes)
    for _ in range(2):  # a first pass of misses, then hits where the bound kept them
        _, uncond = _encode(encoder, [*NEGATIVES, None, NEGATIVES[0]])
        assert uncond[len(NEGATIVES)] is None
        for got, expected in zip(uncond, [*want, None, want[0]], strict=True):
            assert (got is None) == (expected is None)
            if got is not None:
                torch.testing.assert_close(got.hidden[0], expected, rtol=0, atol=1e-6)
        assert len(encoder.uncond_cache) == min(entries, len(NEGATIVES))
        assert encoder.uncond_cache.bytes == len(encoder.uncond_cache) * entry_bytes <= entries * entry_bytes


def test_cached_entries_do_not_hold_the_batch_tensor(torch_runtime: TorchRuntime) -> None:
    encoder = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=1 << 20)
    _encode(encoder, ["blue"] * 3 + ["red"])
    entry = encoder.uncond_cache.get(("blue", "", adapter_set_key(())))
    assert entry is not None
    assert entry.hidden.untyped_storage().nbytes() == entry.hidden.numel() * entry.hidden.element_size()


def test_a_request_without_a_negative_prompt_encodes_the_empty_one_on_sd(torch_runtime: TorchRuntime) -> None:
    encoder = PromptEncoder(torch_runtime, PackedRowCache(0), uncond_cache_bytes=1 << 20)
    empty = encoder.encode([""], [{}], [()]).hidden
    _, uncond = encoder.encode_requests([GenerationRequest("a circle", seed=0)])  # guided, negative not given
    torch.testing.assert_close(uncond[0].hidden, empty, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("negative", "negative_2", "force_zeros", "want"),
    [
        (None, None, True, None),  # zeros
        (None, "a star", True, None),  # diffusers looks at the first negative prompt only
        (None, None, False, ("", "")),
        ("blue", None, True, ("blue", "blue")),  # the second defaults to the first
        ("blue", "red", True, ("blue", "red")),
    ],
)
def test_sdxl_negative_texts(
    negative: str | None, negative_2: str | None, force_zeros: bool, want: tuple[str, str] | None
) -> None:
    xl = XLInfo(Path("unused"), torch.zeros(1, 1), pooled_dim=1, force_zeros_for_empty_prompt=force_zeros)
    request = GenerationRequest("a circle", seed=0, negative_prompt=negative, negative_prompt_2=negative_2)
    assert negative_texts(request, xl) == want
