"""A stable id for a backbone (U-Net + text encoder): adapters trained on one backbone name it."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

SAMPLED_TENSORS = 8  # how many weight tensors are hashed by value (evenly spaced in name order)
SAMPLED_ELEMENTS = 1 << 16  # at most this many leading elements of each


def canonical_module_name(component: str, name: str) -> str:
    """`component.name` with transformers' `text_model.` wrapper removed (it comes and goes across versions)."""
    return f"{component}.{name.removeprefix('text_model.')}" if name else component


def backbone_fingerprint(unet: nn.Module, text_encoder: nn.Module) -> str:
    """sha256 over every parameter's canonical name and shape, plus the values of a few of them.

    Values are hashed as float16, so an fp32 backbone and its fp16 cast share a fingerprint.
    """
    params = {canonical_module_name("unet", n): p for n, p in unet.named_parameters()}
    params |= {canonical_module_name("text_encoder", n): p for n, p in text_encoder.named_parameters()}
    names = sorted(params)
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}:{tuple(params[name].shape)}\n".encode())
    step = max(1, len(names) // SAMPLED_TENSORS)
    for name in names[::step][:SAMPLED_TENSORS]:
        values = params[name].detach().reshape(-1)[:SAMPLED_ELEMENTS].to("cpu", torch.float16)
        h.update(name.encode() + values.numpy().tobytes())
    return h.hexdigest()
