"""`diffplex train-judge`: the command line of `models.shapes.train_judge`."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.shapes.commands import docstring
from models.shapes.paths import JUDGE_WEIGHTS
from models.shapes.recipes import JudgeRecipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=docstring("models.shapes.train_judge"), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=JUDGE_WEIGHTS,
        help="weights file to write; the training report goes beside it (.json)",
    )
    parser.add_argument(
        "--steps", type=int, default=JudgeRecipe.steps, help=f"training steps (default {JudgeRecipe.steps})"
    )
    parser.add_argument("--seed", type=int, default=JudgeRecipe.seed, help=f"seed (default {JudgeRecipe.seed})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from models.shapes.train_judge import run  # torch: only once the arguments hold

    run(args)
