"""A tiny random SD-shaped pipeline directory with dimensions unlike the shipped model's (built in seconds), and
exports as older versions wrote them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPTokenizer

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


def tiny_sd2_pipeline_dir(out: Path, prediction_type: str = "v_prediction") -> Path:
    """The tiny pipeline shaped as SD-2.x: an OpenCLIP-like text encoder (GELU), a tokenizer padding with "!", a U-Net
    with linear attention projections, per-block head counts and upcast attention, a scheduler predicting
    `prediction_type`."""
    tiny_tokenizer(out / "_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out / "_tokenizer", pad_token="!")  # as SD-2's tokenizer pads
    text_encoder = tiny_text_encoder(tokenizer, seed=1, hidden_act="gelu", projection_dim=16)
    unet = tiny_unet(seed=2, attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )  # SD-2.1's own scheduler config
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(seed=3),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return out / "pipeline"


def with_prediction_type(model_dir: Path, target: Path, prediction_type: str) -> Path:
    """A copy of `model_dir` whose scheduler predicts `prediction_type`: the same files otherwise (a second build
    would not do: the tiny tokenizer's BPE training breaks ties differently from one run to the next)."""
    shutil.copytree(model_dir, target)
    config_file = target / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": prediction_type}))
    return target


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
