"""VPT math: a request's prompt tokens per U-Net transformer block, and their extra keys / values.

VPT-deep prepends learned tokens P_j to block j's token sequence (shallow: block 0 only). Only
self-attention mixes tokens, and the outputs at prompt positions are dropped, so prepending equals
giving attn1 extra keys and values. The block applies norm1 before attn1, to prompt tokens as well:
attn1's processor only ever sees norm1(hidden), so the prompt tokens' norm1 is applied where the
extra keys are made (`prompt_keys_values`, called by the banked attn1 processor with its block's norm1).
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


def prompt_keys_values(attn: nn.Module, norm: nn.Module, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Extra keys / values of attn1 for prompt tokens [..., P, d]: to_k(norm1(P)), to_v(norm1(P))."""
    normed = norm(prompt)
    return attn.to_k(normed), attn.to_v(normed)
