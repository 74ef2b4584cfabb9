"""The tiny random SDXL pipeline (`tests/export/sdxl_builders.py`), built once per session; every test gets fresh
copies it may mutate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from diffusers import StableDiffusionXLPipeline

from adapters.spec import BackboneSpec, build_spec
from tests.export.sdxl_builders import tiny_sdxl_pipeline_dir


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sdxl_pipeline_dir(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="session")
def _sdxl_base(sdxl_dir: Path) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(sdxl_dir)


@pytest.fixture
def sdxl_pipe(sdxl_dir: Path) -> StableDiffusionXLPipeline:
    """A pipeline of its own, for diffusers' loaders to mutate."""
    return StableDiffusionXLPipeline.from_pretrained(sdxl_dir)


@pytest.fixture
def sdxl_models(_sdxl_base: StableDiffusionXLPipeline) -> tuple:
    """Copies of (unet, text_encoder, text_encoder_2)."""
    base = _sdxl_base
    return tuple(copy.deepcopy(m) for m in (base.unet, base.text_encoder, base.text_encoder_2))


@pytest.fixture(scope="session")
def sdxl_spec(_sdxl_base: StableDiffusionXLPipeline) -> BackboneSpec:
    return build_spec(_sdxl_base.unet, _sdxl_base.text_encoder, text_encoder_2=_sdxl_base.text_encoder_2)
