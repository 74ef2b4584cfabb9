"""TensorRT engines from the tiny export: parity with PyTorch through the same checks (GPU machines only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.errors import ExportError
from export.manifest import Manifest, load_manifest
from export.parity import check_export
from export.tensorrt_build import ProfileRanges, build_engines, require_tensorrt


def test_tensorrt_without_a_gpu_is_a_clear_error() -> None:
    try:
        require_tensorrt()
    except ExportError as e:
        assert "tensorrt" in str(e).lower() or "CUDA" in str(e)
    else:
        pytest.skip("TensorRT and a GPU are present: the error path does not apply")


def test_the_profile_spans_ranks_1_to_the_cap(tiny_export: tuple[Path, Manifest]) -> None:
    manifest = tiny_export[1]
    bank = next(i["shape"] for i in manifest.graphs["unet"].inputs if i["name"] == "lora_b.0")
    shapes = [ProfileRanges().shape(bank, manifest, k) for k in range(3)]
    assert [s[2] for s in shapes] == [1, 16, manifest.lora_rank] == [1, 16, 128]
    assert [s[0] for s in shapes] == [1, 4, 16]  # slots
    assert ProfileRanges().shape(["slots", 32, 16], manifest, 2) == (16, 32, 16)  # an older export's fixed R


@pytest.mark.gpu
def test_engines_match_pytorch(tiny_export: tuple[Path, Manifest], tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    out = tmp_path / "export"
    shutil.copytree(tiny_export[0], out)
    manifest = load_manifest(out)
    for fp16 in (False, True):
        build_engines(out, manifest, fp16=fp16, progress=lambda _: None)
    manifest.save(out)
    reports = [r for r in check_export(out, tiny_model_dir, cuda=True) if "tensorrt" in r.variant]
    assert reports and all(r.ok for r in reports), "\n".join(r.line() for r in reports)
