"""VPT math: a request's prompt tokens per U-Net transformer block, and their extra keys / values.

VPT-deep prepends learned tokens to block j's token sequence (shallow: block 0 only). Only self-attention
mixes tokens, and the outputs at prompt positions are dropped, so prepending equals giving attn1 extra keys
and values. The tokens P_j live where attn1 reads its input, after the block's norm1: the extra keys and
values are `to_k(P_j)`, `to_v(P_j)` (format version 2).

Why after norm1 (version 1 put them before it, `to_k(norm1(P_j))`): a LayerNorm output has a fixed length,
so version 1's few prompt keys could never outweigh 256 image positions in the softmax, and a VPT could not
repaint a background (night: 8.6% concept accuracy, the loss flat at 0.69 -> 0.68). Tokens in attn1's input
space keep the prepend's meaning (a version-1 token X is the version-2 token norm1(X), which
`convert_pre_norm_tokens` computes) and lift that bound: the loss falls to 0.50 with the same data, and the
night VPT reaches 90.6% (adapters/README.md, "Training"). Tokens in attn1's input space are prefix-tuning's learned
keys and values, parameterized through the frozen projections.
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.errors import AdapterError
from adapters.spec import BackboneSpec
from adapters.types import AdapterSet, VPTAdapter


def vpt_rows(
    adapter_set: AdapterSet, spec: BackboneSpec, tokens: int
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per block j: (prompt tokens [P, d_j], mask [P]) for one request; None when it has no VPT.

    Several VPTs in one request are concatenated along the token axis (P is shared by them); a shallow
    VPT adds to block 0 only, so block masks differ, which is why the mask is per block.
    """
    vpts = [(a, w) for a, w in adapter_set if isinstance(a, VPTAdapter)]
    if not vpts:
        return None
    if bad := [w for _, w in vpts if w != 1.0]:
        raise AdapterError(f"VPT adapters take no weight (got {bad[0]}); use them without a weight")
    rows = []
    for j, dim in enumerate(spec.vpt_dims):
        parts = [a.tokens[j].to(torch.float32) for a, _ in vpts if j < len(a.tokens)]
        used = sum(p.shape[0] for p in parts)
        if used > tokens:
            raise AdapterError(f"the request's VPTs hold {used} tokens together; this export allows {tokens}")
        block = torch.zeros(tokens, dim)
        mask = torch.zeros(tokens)
        if parts:
            block[:used] = torch.cat(parts)
            mask[:used] = 1.0
        rows.append((block, mask))
    return rows


def prompt_keys_values(attn: nn.Module, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Extra keys / values of attn1 for prompt tokens [..., P, d] in attn1's input space: to_k(P), to_v(P)."""
    return attn.to_k(prompt), attn.to_v(prompt)


@torch.no_grad()
def convert_pre_norm_tokens(tokens: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """A version-1 block's tokens X (before the block's norm1) as version-2 tokens: norm1(X), the same keys."""
    return norm(tokens.to(torch.float32)).detach().clone()
