"""Running requests through an engine synchronously, and random adapters for the tiny backbone."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adapters.spec import BackboneSpec
from adapters.types import LoRAAdapter, LoRALayer, VPTAdapter
from service.engine import Engine, GenerationRequest


def generate(engine: Engine, *requests: GenerationRequest) -> list[np.ndarray]:
    jobs = [engine.submit(r) for r in requests]
    engine.run_until_idle()
    return [job.result(timeout=0).image for job in jobs]


def random_lora(spec: BackboneSpec, seed: int, rank: int = 2, scale: float = 0.3) -> LoRAAdapter:
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for t in spec.targets("unet"):
        down = scale * torch.randn(rank, t.d_in, generator=g)
        layers[t.name] = LoRALayer(down, scale * torch.randn(t.d_out, rank, generator=g), rank)
    return LoRAAdapter(layers)


def random_vpt(spec: BackboneSpec, seed: int, tokens: int = 2) -> VPTAdapter:
    g = torch.Generator().manual_seed(seed)
    return VPTAdapter("deep", [torch.randn(tokens, d, generator=g) for d in spec.vpt_dims], spec.fingerprint)


def max_pixel_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def img2img_image(
    pipe: Any, prompt: str, init: np.ndarray, strength: float, steps: int, guidance: float, seed: int
) -> np.ndarray:
    """diffusers' img2img pipeline `pipe` on the uint8 image `init` (as [-1, 1] tensors), as uint8 pixels."""
    image = torch.from_numpy(init).permute(2, 0, 1)[None].float() / 127.5 - 1
    out = pipe(
        prompt,
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    return (out * 255).round().astype(np.uint8)
