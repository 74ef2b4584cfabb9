"""What a step-caching shallow step costs against a full one, in counted FLOPs (torch's FlopCounterMode): on the
bench's backbone, and on SD-1.5's and SDXL's U-Nets built from their shipped configs on the meta device (no weights,
nothing downloaded).

The guidance bench times the shallow steps on this machine; this puts them in proportion at the widths users run.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from export.shipped_configs import CONFIGS_DIR, SDXL_BASE
from export.step_cache import capturing_deep_feature, shallow_unet
from service.bench.lora_macs import SD15_LATENT

SDXL_LATENT = 128  # 1024 px


def _flops(unet: UNet2DConditionModel, inputs: dict) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(**inputs, return_dict=False)
    return float(counter.get_total_flops())


def shallow_share(unet: UNet2DConditionModel, latent_size: int, context: int = 77) -> float:
    """FLOPs of one row's shallow step / its full step, at `latent_size`."""
    device = next(unet.parameters()).device
    inputs = {
        "sample": torch.zeros(1, unet.config.in_channels, latent_size, latent_size, device=device),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": torch.zeros(1, context, unet.config.cross_attention_dim, device=device),
    }
    if unet.config.addition_embed_type == "text_time":  # SDXL's added conditioning
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(1, pooled, device=device),
            "time_ids": torch.zeros(1, 6, device=device),
        }
    with capturing_deep_feature(unet) as captured:
        full = _flops(unet, inputs)
    with shallow_unet(unet, captured[0]):
        shallow = _flops(unet, inputs)
    return shallow / full


def shipped_shallow_share(config: str, latent_size: int) -> float:
    """On the U-Net of a shipped config (export/single_file_configs: "sd15", "sdxl-base"), built on the meta device."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS_DIR / config / "unet"))
    return shallow_share(unet, latent_size)


REAL_SIZES = {"SD-1.5 at 512 px": ("sd15", SD15_LATENT), "SDXL at 1024 px": (SDXL_BASE, SDXL_LATENT)}
