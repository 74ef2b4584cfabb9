"""Runtimes over the tiny pipeline (session-wide: loading them is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.manifest import Manifest
from service.core.settings import EngineSettings
from service.engine import Engine
from service.runtime.onnx_runtime import OnnxRuntime
from service.runtime.torch_runtime import TorchRuntime


@pytest.fixture(scope="session")
def torch_runtime(tiny_model_dir: Path) -> TorchRuntime:
    return TorchRuntime(tiny_model_dir, vpt_tokens=3)  # the default rank cap, as the tiny export's


@pytest.fixture(scope="session")
def ort_runtime(tiny_export: tuple[Path, Manifest]) -> OnnxRuntime:
    return OnnxRuntime(tiny_export[0], prefer_gpu=False, threads=1)


@pytest.fixture
def torch_engine(torch_runtime: TorchRuntime) -> Engine:
    return Engine(torch_runtime, EngineSettings(max_rows=32))


@pytest.fixture
def ort_engine(ort_runtime: OnnxRuntime) -> Engine:
    return Engine(ort_runtime, EngineSettings(max_rows=32))


@pytest.fixture(scope="session")
def sdxl_runtime(tiny_sdxl_model_dir: Path) -> TorchRuntime:
    return TorchRuntime(tiny_sdxl_model_dir, vpt_tokens=3)


@pytest.fixture
def sdxl_engine(sdxl_runtime: TorchRuntime) -> Engine:
    return Engine(sdxl_runtime, EngineSettings(max_rows=32))


@pytest.fixture(scope="session")
def sdxl_ort_runtime(tiny_sdxl_export: tuple[Path, Manifest]) -> OnnxRuntime:
    return OnnxRuntime(tiny_sdxl_export[0], prefer_gpu=False, threads=1)


@pytest.fixture
def sdxl_ort_engine(sdxl_ort_runtime: OnnxRuntime) -> Engine:
    return Engine(sdxl_ort_runtime, EngineSettings(max_rows=32))
