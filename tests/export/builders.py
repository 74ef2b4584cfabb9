"""A tiny random SD-shaped pipeline directory with dimensions unlike the shipped model's (built in seconds), and
exports as older versions wrote them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

from export.manifest import load_manifest
from tests.adapters.builders import tiny_text_encoder, tiny_tokenizer, tiny_unet


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval()


def tiny_pipeline_dir(out: Path) -> Path:
    """Text width 32, U-Net (32, 64) on 8x8 latents, VAE 2x downsampling to 16x16 images, SD-1.x scheduler."""
    tokenizer = tiny_tokenizer(out / "_tokenizer")
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=tiny_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return out / "pipeline"


def without_variants(export: Path, target: Path, drop: Callable[[str], bool]) -> Path:
    """A copy of `export` whose manifest and directory lack the variants `drop` picks, as an export made
    before they existed."""
    shutil.copytree(export, target)
    manifest = load_manifest(target)
    for entry in manifest.graphs.values():
        for variant in [v for v in entry.variants if drop(v)]:
            file = entry.variants.pop(variant)
            del manifest.files[file]
            (target / file).unlink()
    manifest.save(target)
    return target


def fp16_variant_dirs(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """Two copies of `model_dir`'s weights rounded to fp16: one that holds only fp16-variant files
    (`unet/diffusion_pytorch_model.fp16.safetensors`, ...), as half-precision checkpoints are published, and one
    with the same rounded values as plain fp32 files (what the variant directory must load as)."""
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(out / "fp16-variant", safe_serialization=True, variant="fp16")
    pipe.to(torch.float32)
    pipe.save_pretrained(out / "fp16-rounded", safe_serialization=True)
    return out / "fp16-variant", out / "fp16-rounded"
