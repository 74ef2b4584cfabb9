"""A stable id for a backbone (U-Net + text encoder, + SDXL's second text encoder): adapters trained on one backbone
name it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

SAMPLED_TENSORS = 8  # how many weight tensors are hashed by value (evenly spaced in name order)
SAMPLED_ELEMENTS = 1 << 16  # at most this many leading elements of each


def canonical_module_name(component: str, name: str) -> str:
    """`component.name` with transformers' `text_model.` wrapper removed (it comes and goes across versions)."""
    return f"{component}.{name.removeprefix('text_model.')}" if name else component


def fingerprinted_parameters(
    unet: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module | None = None
) -> dict[str, nn.Parameter]:
    """Every parameter the fingerprint covers, by canonical name (`text_encoder_2.<path>`: SDXL's second encoder;
    without one, the same names as before SDXL, so SD-1.x/2.x fingerprints did not change)."""
    components = {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    return {
        canonical_module_name(component, n): p
        for component, model in components.items()
        if model is not None
        for n, p in model.named_parameters()
    }


def sampled_names(names: Iterable[str]) -> list[str]:
    """The canonical parameter names whose values the fingerprint hashes (evenly spaced in name order): all a
    backbone built without weights needs to load to be fingerprinted."""
    ordered = sorted(names)
    step = max(1, len(ordered) // SAMPLED_TENSORS)
    return ordered[::step][:SAMPLED_TENSORS]


def backbone_fingerprint(unet: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module | None = None) -> str:
    """sha256 over every parameter's canonical name and shape, plus the values of a few of them.

    Values are hashed as float16, so an fp32 backbone and its fp16 cast share a fingerprint.
    """
    params = fingerprinted_parameters(unet, text_encoder, text_encoder_2)
    names = sorted(params)
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}:{tuple(params[name].shape)}\n".encode())
    for name in sampled_names(names):
        values = params[name].detach().reshape(-1)[:SAMPLED_ELEMENTS].to("cpu", torch.float16)
        h.update(name.encode() + values.numpy().tobytes())
    return h.hexdigest()
