"""A tiny random StableDiffusionPipeline on disk (64x64 images, 8x8 latents) for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from models.shapes.architecture import build_scheduler
from tests.adapters.builders import tiny_text_encoder, tiny_tokenizer, tiny_unet


def tiny_vae() -> AutoencoderKL:
    """Three downsamples: 64x64 images -> 8x8 latents, the tiny U-Net's sample size."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-pipeline")
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=tiny_unet(),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out
