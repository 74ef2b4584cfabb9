"""Small valid adapter files for the tiny backbone, in the formats tenants upload."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters import vpt_to_bytes
from adapters.spec import BackboneSpec
from service.runtime.torch_runtime import TorchRuntime
from tests.adapters.builders import safetensors_bytes
from tests.service.engine.helpers import random_lora, random_vpt


def tiny_spec(model_dir: Path) -> BackboneSpec:
    """The spec the server computes for the same directory (same targets, R 4, P 3)."""
    return TorchRuntime(model_dir, lora_rank=4, vpt_tokens=3).info.spec


def lora_file(spec: BackboneSpec, seed: int = 1) -> bytes:
    """peft / diffusers keys (`unet.<module>.lora_A.weight`), no metadata: alpha = rank, as diffusers loads it."""
    adapter = random_lora(spec, seed, rank=2, scale=0.5)
    tensors = {}
    for name, layer in adapter.layers.items():
        tensors[f"{name}.lora_A.weight"] = layer.down
        tensors[f"{name}.lora_B.weight"] = layer.up
    return safetensors_bytes(tensors)


def ti_file(spec: BackboneSpec, token: str, seed: int = 2) -> bytes:
    """diffusers `learned_embeds.safetensors`: {token: [n, D]}."""
    g = torch.Generator().manual_seed(seed)
    return safetensors_bytes({token: 3 * torch.randn(2, spec.token_embedding_dim, generator=g)})


def vpt_file(spec: BackboneSpec, seed: int = 3) -> bytes:
    return vpt_to_bytes(random_vpt(spec, seed, tokens=2))
