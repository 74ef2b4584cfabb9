"""VPT: P trainable prompt tokens per U-Net transformer block (deep) or for block 0 only (shallow).

Trained through the serving path's own reference modules: `install_banked` with a spec stripped of its
LoRA targets adds only the `VPTAttnProcessor`s, and the trainable tokens are the banks of a single slot
that every row of the batch uses. Blocks a shallow VPT leaves alone get zero tokens with mask 0.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import StableDiffusionPipeline

from adapters.errors import AdapterError
from adapters.install import install_banked, vpt_block_norms
from adapters.packing import vpt_mask_name, vpt_name
from adapters.spec import BackboneSpec
from adapters.training.data import TrainingSet
from adapters.training.loop import Settings, frozen_text, train
from adapters.training.options import DEPTHS, MAX_TOKENS
from adapters.types import VPTAdapter
from adapters.vpt import convert_pre_norm_tokens


def train_vpt(
    pipe: StableDiffusionPipeline,
    data: TrainingSet,
    settings: Settings,
    spec: BackboneSpec,
    tokens: int = 4,
    depth: str = "deep",
    preserve: bool = False,
) -> tuple[VPTAdapter, dict[str, float]]:
    if not spec.vpt_blocks:
        raise AdapterError("this backbone's U-Net blocks cannot take VPT prompt tokens")
    if not 1 <= tokens <= MAX_TOKENS:
        raise AdapterError(f"--tokens must be 1 to {MAX_TOKENS} (the export's P), got {tokens}")
    if depth not in DEPTHS:
        raise AdapterError(f"--depth must be shallow or deep, got {depth!r}")
    dims = spec.vpt_dims[:1] if depth == "shallow" else spec.vpt_dims
    generator = torch.Generator().manual_seed(settings.seed)
    # Tokens live in attn1's input space (after norm1, `adapters.vpt`); they start as the block's norm1 of
    # unit-variance noise, i.e. where a token prepended before norm1 would start, at the scale of the image
    # tokens attn1 sees. A few such keys barely move the backbone (measured: +0.1% on the loss, like sampled
    # image tokens or zeros), so no special init; training may then grow them past LayerNorm's fixed length.
    norms = vpt_block_norms(pipe.unet, spec, len(dims))
    params = [
        convert_pre_norm_tokens(torch.randn(tokens, d, generator=generator), norm).requires_grad_(True)
        for d, norm in zip(dims, norms, strict=True)
    ]
    banked = install_banked(pipe.unet, dataclasses.replace(spec, lora_targets=()), "unet")

    def banks() -> dict[str, torch.Tensor]:
        out = {}
        for j, dim in enumerate(spec.vpt_dims):
            trained = j < len(params)
            out[vpt_name(j)] = params[j][None] if trained else torch.zeros(1, tokens, dim)
            out[vpt_mask_name(j)] = torch.full((1, tokens), 1.0 if trained else 0.0)
        return out

    def denoise(x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        with banked.activate(banks(), torch.zeros(len(x), dtype=torch.int64)):
            return pipe.unet(x, t, hidden).sample

    try:
        # Outside `activate` the banked processors hand over to the plain ones: the backbone's own prediction.
        text = frozen_text(pipe)
        baseline = (lambda x, t, captions: pipe.unet(x, t, text(captions)).sample) if preserve else None
        stats = train(pipe, data, params, text, denoise, settings, baseline)
    finally:
        banked.remove()
    adapter = VPTAdapter(depth, tuple(p.detach().clone() for p in params), spec.fingerprint)  # type: ignore[arg-type]
    return adapter, stats
