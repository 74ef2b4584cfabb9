"""An export made before the LoRA banks' rank axis was dynamic (every bank input fixed at R) still loads and runs:
the runtimes pack every call at its R, and its images are the current export's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from adapters.packing import pack_banks
from export.manifest import Manifest, load_manifest
from export.parity import check_export
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime
from tests.export.fixed_rank import with_fixed_rank
from tests.service.engine.helpers import generate, max_pixel_diff, random_lora

OLD_RANK = 16  # the default R before the rank axis
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def old_export(tiny_export: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_fixed_rank(tiny_export[0], tmp_path_factory.mktemp("fixed-rank") / "export", OLD_RANK)


def test_the_manifest_says_the_rank_is_fixed(old_export: Path) -> None:
    manifest = load_manifest(old_export)
    assert manifest.rank_dim == manifest.fixed_lora_rank == manifest.lora_rank == OLD_RANK
    info = OnnxRuntime(old_export, prefer_gpu=False, threads=1).info
    assert info.lora_rank == OLD_RANK and info.lora_rank_fixed


def test_its_graphs_take_only_their_rank(old_export: Path) -> None:
    """Why the runtime must pack at R: the fixed graph refuses a call's own bucket."""
    runtime = OnnxRuntime(old_export, prefer_gpu=False, threads=1, lora_graphs=False)
    info = runtime.info
    sample = torch.randn(1, info.latent_channels, info.latent_size, info.latent_size)
    cond = torch.randn(1, info.spec.max_length, 32)
    row_sets = [((random_lora(info.spec, 1, rank=4), 1.0),)]
    for fixed, ok in ((True, True), (False, False)):
        packed = pack_banks(row_sets, info.spec, info.lora_rank, info.vpt_tokens, fixed_rank=fixed)
        assert packed.unet["lora_a.0"].shape[1] == (OLD_RANK if fixed else 4)
        if ok:
            runtime.unet(sample, torch.tensor([10.0]), cond, packed.adapter_slot, packed.unet)
        else:
            with pytest.raises(InvalidArgument, match="Got invalid dimensions for input: lora_"):
                runtime.unet(sample, torch.tensor([10.0]), cond, packed.adapter_slot, packed.unet)


def test_its_images_are_the_current_export_s(old_export: Path, tiny_export: tuple[Path, Manifest]) -> None:
    """The engine packs every call of the old export at R (text encoder and U-Nets, banked and LoRA-only graphs):
    LoRA rows give the current export's images, whose calls run at the rank's bucket (4)."""
    old = OnnxRuntime(old_export, prefer_gpu=False, threads=1)
    current = OnnxRuntime(tiny_export[0], prefer_gpu=False, threads=1)
    spec = old.info.spec
    requests = [
        GenerationRequest(PROMPT, seed=1, steps=3, adapters=((random_lora(spec, 2, rank=4), 0.8),)),
        GenerationRequest(PROMPT, seed=2, steps=3),
    ]
    images = [generate(Engine(runtime, EngineSettings(max_rows=32)), *requests) for runtime in (old, current)]
    assert all(max_pixel_diff(a, b) <= 1 for a, b in zip(*images, strict=True))


def test_the_parity_check_runs_at_its_rank(old_export: Path, tiny_model_dir: Path) -> None:
    reports = [r for r in check_export(old_export, tiny_model_dir) if not r.skipped]
    assert reports and all(r.ok for r in reports), "\n".join(r.line() for r in reports if not r.ok)
