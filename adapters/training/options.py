"""The command lines of `diffplex adapters train` and `diffplex adapters eval`, and the limits and defaults their
choices are: plain data and argparse, without torch, so `--help` and a mistyped option answer at once
(`adapters/training/cli.py` imports the trainers only after parsing).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from adapters.targets import DEFAULT_LORA_RANK, DEFAULT_UNET_TARGETS, DEFAULT_VPT_TOKENS
from adapters.training.data import CONCEPTS
from models.shapes.paths import PIPELINE_DIR

# What a trained adapter may hold: the export's default caps, so a trained adapter runs on any default export.
MAX_RANK = DEFAULT_LORA_RANK  # `diffplex export --lora-rank`
MAX_TOKENS = DEFAULT_VPT_TOKENS  # `diffplex export --vpt-tokens`, P
MAX_VECTORS = 16  # adapters.validate.ExportLimits.max_ti_vectors
DEPTHS = ("shallow", "deep")  # a VPT on every transformer block, or on the first only
# `--lora-targets`: every banked module, or only the cross-attention's key and value projections (Custom
# Diffusion, Kumari et al. 2023), which act on an image only through the prompt's tokens. That is the paper's
# case for leaving other prompts alone; on the shapes backbone the striped LoRA drifted more this way, in the
# fill of prompts that never name stripes (adapters/EXPERIMENTS.md).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "all": DEFAULT_UNET_TARGETS,
    "cross-attention": ("attn2.to_k", "attn2.to_v"),
}
KIND_NAMES = {"lora": "lora", "ti": "textual_inversion", "vpt": "vpt"}  # `--kind` -> the adapter file's kind


@dataclass(frozen=True)
class KindDefaults:
    """Per kind: steps, learning rate, batch, share of regular images mixed into a concept set.

    Sized so a run takes at most ~8 minutes on two free CPU cores with the shapes backbone (see
    adapters/README.md, "Training"). TI needs no regular images: a prompt without its token is untouched.
    """

    steps: int
    lr: float
    batch: int
    regular_fraction: float


DEFAULTS: dict[str, KindDefaults] = {
    # Measured on the shapes backbone (8 latent channels), batch 16, one core shared with another job:
    # TI 0.25 s/step, LoRA 0.32, VPT 0.23; these step counts take 6-6.5 minutes there, less on two free cores.
    "ti": KindDefaults(steps=1500, lr=2e-3, batch=16, regular_fraction=0.0),
    "lora": KindDefaults(steps=1200, lr=1e-3, batch=16, regular_fraction=0.25),
    # A VPT's concept is asked for by loading it (adapters.training.data), so every image shows it.
    "vpt": KindDefaults(steps=1600, lr=1e-2, batch=16, regular_fraction=0.0),
}


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffplex adapters train",
        description="Train a LoRA, textual inversion (ti) or VPT adapter on the frozen backbone.",
    )
    parser.add_argument("kind", choices=list(DEFAULTS), help="adapter kind")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of png/jpg images, each with a same-stem .txt caption")
    source.add_argument("--concept", choices=list(CONCEPTS), help="render a concept of the shapes world")
    parser.add_argument("--out", type=Path, required=True, help="adapter file to write (.safetensors)")
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory (backbone)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default per kind)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default per kind)")
    parser.add_argument("--batch", type=int, help="images per step (default per kind)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered images, the init and the noise")
    parser.add_argument("--rank", type=int, default=8, help=f"lora: rank, 1 to {MAX_RANK}")
    parser.add_argument(
        "--lora-targets",
        choices=list(LORA_TARGETS),
        help="lora: every banked module (default) or only the cross-attention's keys and values",
    )
    parser.add_argument(
        "--train-text-encoder",
        action="store_true",
        help="lora: also a LoRA on the text encoder, for words the backbone never read",
    )
    parser.add_argument("--tokens", type=int, default=4, help=f"vpt: prompt tokens per block, 1 to {MAX_TOKENS}")
    parser.add_argument("--depth", choices=DEPTHS, default="deep", help="vpt: every transformer block or the first")
    parser.add_argument(
        "--token",
        help="ti: the new token; with --concept it stands where the concept's words would be (default <CONCEPT>); "
        "with --images, the word the captions use for the concept (required)",
    )
    parser.add_argument("--vectors", type=int, default=1, help="ti: vectors per token")
    parser.add_argument(
        "--init-word",
        help="ti: word(s) the vectors start from: as many words as --vectors start one vector each, otherwise "
        "all start at their mean (default per concept)",
    )
    parser.add_argument("--count", type=int, default=512, help="--concept: images to render")
    parser.add_argument("--regular-fraction", type=float, help="--concept: share of ordinary images (default per kind)")
    parser.add_argument(
        "--preserve",
        action="store_true",
        help="lora, vpt: train the ordinary images' rows towards the frozen backbone's prediction (prior preservation)",
    )
    parser.add_argument(
        "--uncond-fraction",
        type=float,
        default=0.0,
        help="lora, vpt with --preserve: share of rows with an empty caption, trained towards the backbone's "
        "unconditional prediction (keeps guidance's uncond branch as the backbone drew it)",
    )
    parser.add_argument(
        "--caption-dropout",
        type=float,
        default=0.0,
        help="share of rows trained with an empty caption towards their own image (for a VPT, which also runs in "
        "guidance's uncond rows)",
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--eval-samples", type=int, default=0, help="after training, evaluate with N samples (0: off)")
    return parser


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffplex adapters eval",
        description="Score an adapter with the judge: concept accuracy and regular prompt accuracy with vs without.",
    )
    parser.add_argument("--kind", choices=list(KIND_NAMES), required=True, help="the adapter's kind")
    parser.add_argument("--file", type=Path, required=True, help="adapter file")
    parser.add_argument("--concept", choices=list(CONCEPTS), required=True, help="the concept it was trained on")
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory (backbone)")
    parser.add_argument("--samples", type=int, default=128, help="prompts per set (concept, regular)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    parser.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="seed of the prompt sets and the images (the same seed: the same prompts and images)",
    )
    parser.add_argument("--batch", type=int, default=32, help="images generated per call")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser
