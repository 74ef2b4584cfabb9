"""`diffplex train-backbone`: the command line of `models.shapes.train_backbone`."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.shapes.commands import docstring
from models.shapes.paths import PIPELINE_DIR
from models.shapes.recipes import Recipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=docstring("models.shapes.train_backbone"), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PIPELINE_DIR, help="pipeline directory to write (replaced)")
    parser.add_argument("--work", type=Path, default=Path(".work/backbone"), help="checkpoints and tokenizer scratch")
    parser.add_argument("--seed", type=int, default=Recipe.seed, help=f"seed of every stage (default {Recipe.seed})")
    parser.add_argument(
        "--unet-steps", type=int, default=Recipe.unet_steps, help=f"U-Net training steps (default {Recipe.unet_steps})"
    )
    parser.add_argument(
        "--high-noise-fraction",
        type=float,
        default=Recipe.high_noise_fraction,
        help=f"share of rows with t drawn from [{Recipe.high_noise_from}, 1000) instead of uniformly "
        f"(default {Recipe.high_noise_fraction})",
    )
    parser.add_argument(
        "--vae-steps",
        type=int,
        default=Recipe.vae_steps,
        help=f"autoencoder training steps (default {Recipe.vae_steps})",
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=Recipe.train_images,
        help=f"images the U-Net and text encoder train on (default {Recipe.train_images})",
    )
    parser.add_argument(
        "--vae-images",
        type=int,
        default=Recipe.vae_images,
        help=f"images the autoencoder trains on (default {Recipe.vae_images})",
    )
    parser.add_argument("--codec-steps", type=int, default=Recipe.codec_steps, help="0 skips the codec stage")
    parser.add_argument(
        "--codec-images",
        type=int,
        default=Recipe.codec_images,
        help=f"images of the codec stage (default {Recipe.codec_images})",
    )
    parser.add_argument(
        "--only-codec-stage",
        action="store_true",
        help="run only the last stage, on the trained pipeline at --out, with that pipeline's recorded recipe",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.codec_steps < 0 or args.codec_images < 1:
        parser.error("--codec-steps must be >= 0 and --codec-images >= 1")
    from models.shapes.train_backbone import run  # torch and diffusers: only once the arguments hold

    run(args)
