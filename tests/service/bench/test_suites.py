"""Each `diffplex bench` suite at a tiny size on the tiny backbone: it runs, writes its JSON and its
BENCHMARKS.md section (leaving the rest of the file alone), and its figures are consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.manifest import Manifest
from models.shapes.train_backbone import PIPELINE_DIR
from service.bench.cli import main
from service.bench.guidance_bench import OPTIONS
from tests.export.fixed_rank import with_fixed_rank

SECTIONS = "# Benchmarks\n\nhand-written text\n\n<!-- bench:engine -->\nengine table\n<!-- /bench:engine -->\n"


def _bench(tmp_path: Path, tiny_model_dir: Path, suite: str, *args: str) -> tuple[dict, str]:
    report, out = tmp_path / "BENCHMARKS.md", tmp_path / f"{suite}.json"
    if not report.exists():
        report.write_text(SECTIONS)
    argv = [suite, "--model", str(tiny_model_dir), "--report", str(report), "--json", str(out), *args]
    assert main(argv) == 0
    text = report.read_text()
    assert "hand-written text" in text and "engine table" in text
    assert f"<!-- bench:{suite} -->" in text and f"`diffplex bench {suite} --model" in text
    return json.loads(out.read_text()), text


def test_precision_records_why_it_was_skipped(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the slow GPU test measures it")
    results, text = _bench(tmp_path, tiny_model_dir, "precision")
    assert "no CUDA GPU" in results["skipped"] and "Skipped: no CUDA GPU" in text


@pytest.mark.gpu
@pytest.mark.slow
def test_precision_on_gpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    args = ("--export", str(tmp_path / "export"), "--requests", "4", "--steps", "2", "--rounds", "1")
    results, text = _bench(tmp_path, tiny_model_dir, "precision", *args)
    assert "skipped" not in results, results
    assert results["ratio"] > 0 and results["pixel_diff"]["max"] < 64
    assert "fp16 / fp32" in text


def test_export(tmp_path: Path, tiny_model_dir: Path) -> None:
    results, text = _bench(tmp_path, tiny_model_dir, "export")
    seconds = results["seconds"]
    assert seconds["total"] >= sum(v for k, v in seconds.items() if "." in k) > 0
    assert {"export.unet_cfg", "optimize.unet_cfg", "export.text_encoder"} <= set(seconds)
    assert results["bytes"] > 0 and "| unet_cfg |" in text


def test_hotload(tmp_path: Path, tiny_model_dir: Path) -> None:
    results, text = _bench(tmp_path, tiny_model_dir, "hotload", "--adapters", "2", "--steps", "1", "--rank", "2")
    assert results["counters"] == {"cache_misses": 2, "cache_hits": 2}  # each cold use missed, each warm use hit
    for key in ("upload", "cold_use", "warm_use", "no_adapter", "upload_to_image"):
        assert 0 < results["latency"][key]["p50_ms"] <= results["latency"][key]["p99_ms"]
    assert "cold / warm use" in text


def test_memory(tmp_path: Path, tiny_model_dir: Path) -> None:
    results, text = _bench(tmp_path, tiny_model_dir, "memory", "--counts", "2,5", "--bounded-mib", "0.001")
    default, bounded = results["runs"]["default"], results["runs"]["bounded"]
    assert [p["adapters"] for p in default] == [0, 2, 5]
    assert [p["cached"] for p in default] == [0, 2, 5] and default[-1]["evicted"] == 0
    assert default[2]["cache_bytes"] > default[1]["cache_bytes"] > 0
    # a budget below one adapter keeps only the newest: the byte bound holds, the rest is evicted
    assert [p["cached"] for p in bounded] == [0, 1, 1] and bounded[-1]["evicted"] == 4
    assert bounded[-1]["cache_bytes"] == default[-1]["cache_bytes"] / 5
    assert "RSS KiB / adapter" in text


def test_profile(tmp_path: Path, tiny_model_dir: Path) -> None:
    results, text = _bench(tmp_path, tiny_model_dir, "profile", "--requests", "2", "--steps", "2", "--cprofile", "5")
    stages = results["stages_s"]
    assert stages["U-Net"] > 0 and stages["text encoder"] > 0 and stages["VAE decode"] > 0
    assert results["http"]["latency_s"] >= results["http"]["server_total_s"] > 0
    assert len(results["engine"]["top_functions"]) == 5
    assert "| U-Net |" in text and "Top functions" in text


def test_guidance(tmp_path: Path) -> None:
    # The shipped model: the judge scores 64x64 images of the shapes world, which the tiny model does not draw.
    export = str(tmp_path / "export")
    results, text = _bench(tmp_path, PIPELINE_DIR, "guidance", "--export", export, "--samples", "4", "--steps", "4")
    options = results["options"]
    assert set(options) == set(OPTIONS) and "cache_interval_3" in options
    base = options["baseline"]
    assert base["unet_rows_saved"] == base["unet_flops_saved"] == 0 and base["gained"] == base["lost"] == 0
    # The guidance options skip uncond rows on some steps: fewer U-Net rows than the baseline's 2 per request per step.
    assert base["unet_rows"] == 4 * 4 * 2
    assert options["uncond_refresh_2"]["unet_rows"] < base["unet_rows"]
    # Step caching runs as many rows, shallow on the steps between full ones (steps 1 and 3 of 4 with k = 2).
    assert options["cache_interval_2"]["unet_rows"] == base["unet_rows"]
    share = results["shallow_share"]
    assert 0 < share < 1
    assert abs(options["cache_interval_2"]["unet_flops_saved"] - 0.5 * (1 - share)) < 1e-9
    assert set(results["shallow_share_real"]) == {"SD-1.5 at 512 px", "SDXL at 1024 px"}
    for entry in options.values():
        assert 0.0 <= entry["prompt_accuracy"] <= 1.0 and entry["gained"] + entry["lost"] <= 4
    assert "| uncond_refresh_2 |" in text and "4 prompts per option" in text and "shallow row costs" in text


def test_guidance_refuses_too_few_samples(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(SystemExit, match="--samples and --steps must be at least 2"):
        main(["guidance", "--model", str(tiny_model_dir), "--report", str(tmp_path / "B.md"), "--samples", "1"])


def test_lora_rank(tmp_path: Path, tiny_model_dir: Path, tiny_export: tuple[Path, Manifest]) -> None:
    args = ("--export", str(tiny_export[0]), "--rows", "3", "--rounds", "2")
    results, text = _bench(tmp_path, tiny_model_dir, "lora-rank", *args)
    assert set(results["cases"]) == {"onnxruntime", "pytorch"}
    for cases in results["cases"].values():
        assert {case: c["rank"] for case, c in cases.items()} == {
            "fixed_r16": 16,
            "per_call": 4,
            "one_rank_128": 128,
            "no_adapters": 0,
        }
        assert cases["fixed_r16"]["vs_fixed_r16"] == 1.0 and cases["no_adapters"]["vs_no_adapters"] == 1.0
        assert cases["per_call"]["bytes"] < cases["fixed_r16"]["bytes"] < cases["one_rank_128"]["bytes"]
    assert "| onnxruntime-cpu |" in text and "| pytorch |" in text and "call of 3 rows" in text


def test_lora_rank_refuses_an_export_of_fixed_rank(
    tmp_path: Path, tiny_model_dir: Path, tiny_export: tuple[Path, Manifest]
) -> None:
    old = with_fixed_rank(tiny_export[0], tmp_path / "old", 16)
    with pytest.raises(SystemExit, match="takes LoRA banks of rank 16 only"):
        main(["lora-rank", "--model", str(tiny_model_dir), "--export", str(old), "--report", str(tmp_path / "B.md")])
