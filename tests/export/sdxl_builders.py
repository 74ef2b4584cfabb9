"""A tiny random SDXL-shaped pipeline directory (built in seconds): two CLIP text encoders of different widths (the
second with a projection and a tokenizer padding with "!", as SDXL's OpenCLIP bigG), a U-Net with SDXL's
`text_time` added conditioning, the tiny VAE, SDXL's Euler scheduler config."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from tests.adapters.builders import tiny_text_encoder, tiny_tokenizer, tiny_unet
from tests.export.builders import tiny_vae

TEXT_DIM, TEXT_DIM_2, POOLED_DIM, TIME_DIM = 32, 48, 24, 8  # te1 width, te2 width, te2 projection, per time id


def tiny_text_encoder_2(tokenizer: CLIPTokenizer, seed: int = 1) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM_2,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=POOLED_DIM,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config).eval()


def tiny_sdxl_unet(seed: int = 2) -> torch.nn.Module:
    """SDXL's U-Net shape in miniature: linear projections, cross-attention over both encoders' widths, and the
    `text_time` embedding of the pooled text embedding with six Fourier-embedded time ids."""
    return tiny_unet(
        seed=seed,
        cross_attention_dim=TEXT_DIM + TEXT_DIM_2,
        use_linear_projection=True,
        attention_head_dim=(2, 4),
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=6 * TIME_DIM + POOLED_DIM,
        transformer_layers_per_block=(1, 2),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def tiny_sdxl_pipeline_dir(out: Path, force_zeros_for_empty_prompt: bool = True) -> Path:
    tokenizer = tiny_tokenizer(out / "_tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(out / "_tokenizer", pad_token="!")  # as SDXL's second pads
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(seed=3),
        text_encoder=tiny_text_encoder(tokenizer),
        text_encoder_2=tiny_text_encoder_2(tokenizer_2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=tiny_sdxl_unet(),
        scheduler=EulerDiscreteScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            steps_offset=1,
            timestep_spacing="leading",
            use_karras_sigmas=False,
        ),  # SDXL-base's own scheduler config
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
    )
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return out / "pipeline"
