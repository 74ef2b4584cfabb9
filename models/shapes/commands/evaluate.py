"""`diffplex eval`: the command line of `models.shapes.evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.shapes.commands import docstring
from models.shapes.paths import CARD_DIR, PIPELINE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=docstring("models.shapes.evaluate"), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory")
    # 1,024 by default: at 256 samples one standard error of a ~90% accuracy is 1.9 points, as wide as the
    # margins this meter is read against; at 1,024 it is 0.9 (about 2.5 minutes on two cores).
    parser.add_argument("--samples", type=int, default=1024, help="images generated and judged (default 1024)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and the images (default 0)")
    parser.add_argument("--batch", type=int, default=64, help="images per pipeline call (default 64)")
    parser.add_argument("--json", type=Path, default=CARD_DIR / "eval.json", help="where the report is written")
    parser.add_argument("--grid", type=Path, default=CARD_DIR / "samples.png", help="grid of the first 64 samples")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.samples < 2 or args.steps < 1 or args.batch < 1:
        parser.error("--samples must be >= 2, --steps and --batch >= 1")
    from models.shapes.evaluate import run  # torch and diffusers: only once the arguments hold

    run(args)
