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
    """R 4, P 3, with ORT-optimized and fp16 variants."""
    out = tmp_path_factory.mktemp("tiny-export")
    manifest = export_pipeline(
        ExportOptions(model_dir=tiny_model_dir, out_dir=out, lora_rank=4, vpt_tokens=3, fp16=True),
        progress=lambda _: None,
    )
    return out, manifest
