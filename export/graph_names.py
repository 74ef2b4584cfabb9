"""The exported graphs' names (the files' stems in an export directory, the manifest's keys). Plain data, without
torch: `diffplex export --help` lists them; `export.graphs` builds the modules they name."""

from __future__ import annotations

UNET_CFG = "unet_cfg"
UNET_PLAIN = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's second encoder: penultimate hidden states and the pooled embedding
VAE_ENCODER = "vae_encoder"
VAE_DECODER = "vae_decoder"
GRAPHS: tuple[str, ...] = (TEXT_ENCODER, UNET_CFG, UNET_PLAIN, VAE_ENCODER, VAE_DECODER)
BASE_GRAPHS: tuple[str, ...] = (UNET_CFG, UNET_PLAIN)  # graphs exported with an adapter-free variant too
