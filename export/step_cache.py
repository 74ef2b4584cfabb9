"""Step caching (DeepCache, Ma et al. 2023, https://arxiv.org/abs/2312.00858): the U-Net split at its outermost
skip branch, so that a step may reuse the deep part's output from an earlier step.

A full step runs the whole U-Net and also returns its *deep feature*: the input of the last up block (the
output of everything below the first down block: the other down blocks, the mid block and the other up blocks,
upsampled to the latent's size). A shallow step runs only what lies above that branch: the time embedding,
`conv_in`, the first down block (without its downsampler, whose output only the deep part reads), the last up
block on the cached deep feature and the fresh skip connections of the first down block, and the output convs.
Adapters on the skipped blocks do not run on a shallow step; their effect reaches it through the cached feature.

The split is at block granularity: the branch DeepCache calls (layer 0, block 0) for SD-1.5 is one layer finer
(the first resnet/attention pair of the first down block). Both run the same high-resolution layers; the
block-level branch keeps all of the first down block, and needs no change inside diffusers' blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

DEEP_FEATURE = "deep_feature"
UNCOND_DEEP_FEATURE = "uncond_deep_feature"  # the fused-CFG graphs' uncond rows' features, as the contexts are split


@dataclass(frozen=True)
class StepCacheDims:
    """What the contract needs to know of the split: the deep feature's channels, and the U-Net's up blocks (the
    last one runs on shallow steps)."""

    feature_channels: int
    up_blocks: int

    def to_dict(self) -> dict:
        return {"feature_channels": self.feature_channels, "up_blocks": self.up_blocks}

    @classmethod
    def from_dict(cls, data: dict) -> StepCacheDims:
        return cls(feature_channels=int(data["feature_channels"]), up_blocks=int(data["up_blocks"]))

    @classmethod
    def of(cls, unet: nn.Module) -> StepCacheDims | None:
        """The split of `unet`, or None where it has no outer skip branch to cache below (a single down block) or
        `shallow_forward` does not cover its conditioning (`unsupported_conditioning`)."""
        channels = list(unet.config.block_out_channels)
        if len(channels) < 2 or len(unet.up_blocks) != len(channels) or unsupported_conditioning(unet):
            return None
        # The last up block's input: the previous up block's output, whose width is the second block's.
        return cls(feature_channels=int(channels[1]), up_blocks=len(unet.up_blocks))

    def runs_shallow(self, module_name: str) -> bool:
        """Whether U-Net module `module_name` (a LoRA target, a VPT block) runs on a shallow step."""
        if module_name.startswith("down_blocks.0."):
            return not module_name.startswith("down_blocks.0.downsamplers.")
        if module_name.startswith(f"up_blocks.{self.up_blocks - 1}."):
            return True
        return not module_name.startswith(("down_blocks.", "up_blocks.", "mid_block."))


def unsupported_conditioning(unet: nn.Module) -> dict[str, object]:
    """The U-Net's conditioning options `shallow_forward` does not reproduce (empty for SD-1.x/2.x and SDXL)."""
    config = unet.config
    options = {
        "class_embed_type": config.class_embed_type,
        "addition_embed_type": config.addition_embed_type if config.addition_embed_type != "text_time" else None,
        "encoder_hid_dim_type": config.encoder_hid_dim_type,
        "time_cond_proj_dim": config.time_cond_proj_dim,
    }
    return {k: v for k, v in options.items() if v is not None}


@contextmanager
def capturing_deep_feature(unet: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, each forward of `unet` appends its deep feature (the last up block's input) to the list."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    handle = unet.up_blocks[-1].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def shallow_unet(unet: nn.Module, deep_feature: torch.Tensor) -> Iterator[None]:
    """While open, calling `unet` runs its shallow path on `deep_feature` (rows in the order of the call's rows).

    The graph modules call the U-Net through diffusers' signature (graphs.py, `fused_cfg`); swapping its forward for
    the duration of one call lets every graph form (plain, fused CFG, SDXL) run shallow without a copy of its code.
    """
    unet.forward = partial(shallow_forward, unet, deep_feature)  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del unet.forward


@contextmanager
def _without_downsamplers(block: nn.Module) -> Iterator[None]:
    """The block's downsampler skipped: its output feeds only the deep part (the blocks test `is not None`)."""
    downsamplers = block.downsamplers
    block.downsamplers = None
    try:
        yield
    finally:
        block.downsamplers = downsamplers


def shallow_forward(
    unet: nn.Module,
    deep_feature: torch.Tensor,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    return_dict: bool = False,
) -> tuple[torch.Tensor]:
    """`UNet2DConditionModel.forward` with everything below the outer skip branch replaced by `deep_feature`: the
    same embedding and block calls as diffusers' forward for the blocks it runs (`unsupported_conditioning` names
    what it does not cover)."""
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    context = {"encoder_hidden_states": encoder_hidden_states}
    sample = unet.conv_in(sample)
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    with _without_downsamplers(first):
        if getattr(first, "has_cross_attention", False):
            _, skips = first(hidden_states=sample, temb=emb, **context)
        else:
            _, skips = first(hidden_states=sample, temb=emb)
    skips = (sample, *skips)  # what the last up block pops: conv_in's output and the first block's layers
    if getattr(last, "has_cross_attention", False):
        sample = last(hidden_states=deep_feature, temb=emb, res_hidden_states_tuple=skips, **context)
    else:
        sample = last(hidden_states=deep_feature, temb=emb, res_hidden_states_tuple=skips)
    if unet.conv_norm_out:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return (unet.conv_out(sample),)
