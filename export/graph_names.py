"""The exported graphs' names (the files' stems in an export directory, the manifest's keys). Plain data, without
torch: `diffplex export --help` lists them; `export.graphs` builds the modules they name."""

from __future__ import annotations

UNET_CFG = "unet_cfg"
UNET_PLAIN = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's second encoder: penultimate hidden states and the pooled embedding
VAE_ENCODER = "vae_encoder"
VAE_DECODER = "vae_decoder"
# Step caching (export/step_cache.py): the U-Nets' shallow paths, run on the cached deep feature of a full step.
UNET_CFG_SHALLOW = "unet_cfg_shallow"
UNET_SHALLOW = "unet_shallow"
GRAPHS: tuple[str, ...] = (
    TEXT_ENCODER,
    UNET_CFG,
    UNET_PLAIN,
    UNET_CFG_SHALLOW,
    UNET_SHALLOW,
    VAE_ENCODER,
    VAE_DECODER,
)
# Graphs exported with an adapter-free (and a LoRA-only) variant too: the U-Nets.
BASE_GRAPHS: tuple[str, ...] = (UNET_CFG, UNET_PLAIN, UNET_CFG_SHALLOW, UNET_SHALLOW)
FULL_UNETS: tuple[str, ...] = (UNET_CFG, UNET_PLAIN)
SHALLOW_OF = {UNET_CFG: UNET_CFG_SHALLOW, UNET_PLAIN: UNET_SHALLOW}  # full U-Net graph -> its shallow path
CFG_UNETS: tuple[str, ...] = (UNET_CFG, UNET_CFG_SHALLOW)  # the fused-CFG forms: cond and uncond rows in one pass
