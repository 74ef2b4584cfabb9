"""The shapes backbone's components, built from diffusers/transformers classes with small configs.

Sizes are chosen so the whole recipe trains in under 90 minutes on two CPU cores and the weights fit in
~20 MB, while keeping the SD-1.x structure (CLIP text encoder, KL autoencoder,
cross-attention U-Net with self-attn / cross-attn / GEGLU transformer blocks) that export and adapters
must handle for real models too.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from models.shapes.dataset import IMAGE_SIZE
from models.shapes.tokenizer import MAX_LENGTH


@dataclass(frozen=True)
class BackboneConfig:
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 64)  # two downsamples: 64x64 images -> 16x16 latents
    # 8, not SD's 4: with 4 channels, striped fill (a held-out value adapters must teach) did not
    # survive the autoencoder (judge 14% on reconstructions); with 8 it does (EXPERIMENTS.md, run 2).
    latent_channels: int = 8
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_heads: int = 2
    unet_layers_per_block: int = 1

    @property
    def latent_size(self) -> int:
        return IMAGE_SIZE // 2 ** (len(self.vae_channels) - 1)


def build_text_encoder(cfg: BackboneConfig, vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_width * 4,
        projection_dim=cfg.text_width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def build_vae(cfg: BackboneConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,  # 2x faster to train; flat shapes need no global mixing to decode
    )


def build_unet(cfg: BackboneConfig) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        # Cross-attention at every level, 4x4 included: convolutions with zero padding only know where
        # they are near a border, and at 4x4 every position is; that is where "top left" can be placed.
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.unet_heads,  # diffusers' SD-1.x naming: this is the number of heads
        norm_num_groups=32,
    )


def build_scheduler() -> DDIMScheduler:
    """DDPM's linear betas with trailing timesteps and v-prediction; DDIM is what the pipeline samples with.

    SD-1.x's scaled-linear betas leave sqrt(alpha_bar_T) ~ 0.07 of the image at t = 999: on a 16x16
    latent the background and position stay readable, so a model learns to copy them from the noise and
    ignores the prompt (EXPERIMENTS.md, runs 1-2). Linear betas end near zero SNR (0.006) and trailing
    spacing starts sampling at t = 999. At that SNR an epsilon target says nothing about the image, so
    the model predicts v (as SD 2.x does): at high noise its loss is the clean image's loss, which
    forces the layout to come from the prompt.
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=0,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
    )
