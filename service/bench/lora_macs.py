"""What rank-R LoRA banks add to a U-Net call, in multiply-accumulates: on the bench's backbone and on an
SD-1.5-shaped U-Net (built on the meta device: no weights, nothing downloaded).

The engine bench measures the banked graphs' time on this machine; this puts the figure in proportion.
A LoRA target of d_in -> d_out over T tokens costs T * R * (d_in + d_out) on top of its T * d_in * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from adapters.spec import DEFAULT_UNET_TARGETS

SD15_LATENT = 64  # 512 px
SD15_CONTEXT = 768


@dataclass(frozen=True)
class LoraMacs:
    unet_macs: float  # one row of one U-Net call
    per_target: dict[str, float]  # module name -> what its bank adds at rank R

    @property
    def lora_macs(self) -> float:
        return sum(self.per_target.values())

    @property
    def share(self) -> float:
        return self.lora_macs / self.unet_macs

    def summary(self) -> dict[str, float]:
        return {"unet_macs": self.unet_macs, "lora_macs": self.lora_macs, "targets": len(self.per_target)}


def _is_target(name: str, module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and any(name.endswith(t) for t in DEFAULT_UNET_TARGETS)


def lora_macs(unet: UNet2DConditionModel, latent_size: int, context_dim: int, rank: int) -> LoraMacs:
    """One row through `unet`, counting its MACs and the tokens each LoRA target sees."""
    added: dict[str, float] = {}

    def count(name: str, module: torch.nn.Module, x: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Linear):
            d_in, d_out, tokens = module.in_features, module.out_features, x.numel() // module.in_features
        else:  # 1x1 conv (proj_in / proj_out of older configs): one token per pixel
            d_in, d_out, tokens = module.in_channels, module.out_channels, x.shape[-2] * x.shape[-1]
        added[name] = tokens * rank * (d_in + d_out)

    hooks = [
        m.register_forward_hook(lambda mod, inputs, _, name=n: count(name, mod, inputs[0]))
        for n, m in unet.named_modules()
        if _is_target(n, m)
    ]
    device = next(unet.parameters()).device
    sample = torch.zeros(1, unet.config.in_channels, latent_size, latent_size, device=device)
    context = torch.zeros(1, 77, context_dim, device=device)
    try:
        with FlopCounterMode(display=False) as flops, torch.no_grad():
            unet(sample, torch.tensor([500], device=device), context)
    finally:
        for hook in hooks:
            hook.remove()
    return LoraMacs(flops.get_total_flops() / 2, added)


def sd15_lora_macs(rank: int) -> LoraMacs:
    """The same count on diffusers' default U-Net config with SD-1.5's text width, at 512 px."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=SD15_CONTEXT, sample_size=SD15_LATENT)
    return lora_macs(unet, SD15_LATENT, SD15_CONTEXT, rank)
