"""The LoRA MAC count: one entry per U-Net target the export banks, linear in the rank, and exact on a
target whose token count is known (cross-attention keys see the 77 text tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import UNet2DConditionModel

from adapters.spec import build_spec
from models.shapes.evaluate import load_pipeline
from service.bench.lora_macs import lora_macs, sd15_lora_macs


@pytest.fixture(scope="module")
def unet(tiny_model_dir: Path) -> UNet2DConditionModel:
    return load_pipeline(tiny_model_dir).unet


def test_one_count_per_banked_target_and_linear_in_rank(tiny_model_dir: Path, unet: UNet2DConditionModel) -> None:
    pipe = load_pipeline(tiny_model_dir)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    size, width = unet.config.sample_size, pipe.text_encoder.config.hidden_size
    r4, r8 = lora_macs(unet, size, width, 4), lora_macs(unet, size, width, 8)
    assert len(r4.per_target) == len(spec.targets("unet"))
    assert r8.lora_macs == 2 * r4.lora_macs and r8.unet_macs == r4.unet_macs
    assert 0 < r4.share < 1


def test_a_cross_attention_key_is_counted_over_the_77_text_tokens(unet: UNet2DConditionModel) -> None:
    counted = lora_macs(unet, unet.config.sample_size, 32, rank=3)
    name, key = next((n, m) for n, m in unet.named_modules() if n.endswith("attn2.to_k"))
    assert counted.per_target[name] == 77 * 3 * (key.in_features + key.out_features)
    assert counted.lora_macs == sum(counted.per_target.values())


def test_sd15_shape_is_counted_without_weights() -> None:
    counted = sd15_lora_macs(16)
    assert len(counted.per_target) == 192  # 16 transformer blocks x 12 targets
    assert 300e9 < counted.unet_macs < 500e9  # SD-1.5's U-Net: ~400 GMAC per row at 512 px
