"""Where the shapes world's shipped files live. Plain paths, without torch: command-line parsers show them as
defaults (`diffplex ... --help`) and the service finds the default backbone without importing a trainer."""

from __future__ import annotations

from pathlib import Path

CARD_DIR = Path(__file__).parent  # the model card: README.md, eval.json, samples.png, judge.json
PIPELINE_DIR = CARD_DIR / "pipeline"  # the embedded default backbone, a diffusers pipeline directory
JUDGE_WEIGHTS = CARD_DIR / "judge.safetensors"
