"""`diffplex bench sdxl` on the tiny SDXL pipeline's configs (the real run builds SDXL-base, ~14 GB): every ratio
is measured and reported in its BENCHMARKS.md section."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.bench.sdxl_bench import markdown, run


def test_the_suite_measures_every_ratio(tiny_sdxl_model_dir: Path) -> None:
    args = argparse.Namespace(steps=1, rounds=1, size=16, config=tiny_sdxl_model_dir)
    results = run(args, progress=lambda _: None)
    for key in ("vs_diffusers_1", "vs_diffusers_8", "fused_vs_split"):
        assert results[key]["ratio"] > 0
    assert results["adapters"]["loras_vs_none"] > 0 and results["adapters"]["vpts_vs_none"] > 0
    assert results["vpt_blocks"] > 0 and results["lora_targets"] > 0
    text = markdown(results, "diffplex bench sdxl --steps 1")
    assert text.startswith("## SDXL") and "8 distinct deep VPTs" in text and "`diffplex bench sdxl --steps 1`" in text
