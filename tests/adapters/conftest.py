"""Tiny random backbones shared by the adapters tests; every test gets fresh copies it may mutate."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from adapters.spec import BackboneSpec, build_spec
from tests.adapters.builders import tiny_text_encoder, tiny_tokenizer, tiny_unet

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def _base_models(tokenizer_dir: Path) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    return tiny_unet(), tiny_text_encoder(tokenizer)


@pytest.fixture
def tokenizer(tokenizer_dir: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def unet(_base_models: tuple[UNet2DConditionModel, CLIPTextModel]) -> UNet2DConditionModel:
    return copy.deepcopy(_base_models[0])


@pytest.fixture
def text_encoder(_base_models: tuple[UNet2DConditionModel, CLIPTextModel]) -> CLIPTextModel:
    return copy.deepcopy(_base_models[1])


@pytest.fixture(scope="session")
def spec(_base_models: tuple[UNet2DConditionModel, CLIPTextModel]) -> BackboneSpec:
    return build_spec(*_base_models)
