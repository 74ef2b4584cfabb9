"""Classifier-free guidance: the one combination of a conditional and an unconditional noise prediction.

The exported fused-CFG graph (graphs.py `fused_cfg`) traces it, and the serving engine calls it for the rows
it guides outside that graph (service/engine: the uncond-refresh rows), so both compute the same numbers.
"""

from __future__ import annotations

import torch


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: torch.Tensor) -> torch.Tensor:
    """uncond + g * (cond - uncond), one scale per row (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598).

    `cond`, `uncond`: [N, C, h, w] predictions; `guidance_scale`: [N], cast to the predictions' dtype so an
    fp16 graph stays fp16. The order of operations is diffusers' pipelines', which the parity tests hold to.
    """
    return uncond + guidance_scale.to(cond.dtype).view(-1, 1, 1, 1) * (cond - uncond)
