"""The tiny backbone's runtime, loaded once, for the tests that plan and make images."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime.torch_runtime import TorchRuntime


@pytest.fixture(scope="session")
def tiny_runtime(tiny_model_dir: Path) -> TorchRuntime:
    return TorchRuntime(tiny_model_dir, lora_rank=4, vpt_tokens=3)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
