"""Session fixtures shared across test packages: a tiny random SD-shaped pipeline and its export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from export.exporter import ExportOptions, export_pipeline
from export.manifest import Manifest
from tests.export.builders import tiny_pipeline_dir

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipeline_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """The default rank cap (128; the banks' rank is per call), P 3, with ORT-optimized and fp16 variants."""
    out = tmp_path_factory.mktemp("tiny-export")
    manifest = export_pipeline(
        ExportOptions(model_dir=tiny_model_dir, out_dir=out, vpt_tokens=3, fp16=True), progress=lambda _: None
    )
    return out, manifest


@pytest.fixture(scope="session")
def tiny_sd2_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """prediction type -> the tiny pipeline shaped as SD-2.x (OpenCLIP-style text encoder, linear projections);
    the same files but for the scheduler's prediction type."""
    from tests.export.builders import tiny_sd2_pipeline_dir, with_prediction_type

    out = tmp_path_factory.mktemp("tiny-sd2")
    epsilon = tiny_sd2_pipeline_dir(out / "epsilon", "epsilon")
    return {"epsilon": epsilon, "v_prediction": with_prediction_type(epsilon, out / "v_prediction", "v_prediction")}


@pytest.fixture(scope="session")
def tiny_sdxl_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL-shaped pipeline (two text encoders, `text_time` added conditioning)."""
    from tests.export.sdxl_builders import tiny_sdxl_pipeline_dir

    return tiny_sdxl_pipeline_dir(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sdxl_export(tiny_sdxl_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """The tiny SDXL pipeline exported with P 3 (no fp16 or ORT-optimized files: the SD export covers those)."""
    out = tmp_path_factory.mktemp("tiny-sdxl-export")
    options = ExportOptions(model_dir=tiny_sdxl_model_dir, out_dir=out, vpt_tokens=3, optimize=False)
    return out, export_pipeline(options, progress=lambda _: None)


@pytest.fixture(scope="session")
def tiny_single_files(
    tiny_model_dir: Path, tiny_sd2_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The tiny pipelines as single-file checkpoints in the LDM layout: "sd1" / "sd2" + ".safetensors" / ".ckpt"."""
    from tests.export.ldm_layout import write_single_file

    out = tmp_path_factory.mktemp("single-files")
    sources = {"sd1": (tiny_model_dir, "clip"), "sd2": (tiny_sd2_model_dirs["epsilon"], "open_clip")}
    return {
        f"{name}{suffix}": write_single_file(source, out / f"{name}{suffix}", layout)  # type: ignore[arg-type]
        for name, (source, layout) in sources.items()
        for suffix in (".safetensors", ".ckpt")
    }
