"""The shipped SDXL-base config (`diffplex bench sdxl` builds its model from it) is SDXL-base: each component built
from it on the meta device has the published parameter count, and the directory is a pipeline layout diffplex
loads (two tokenizers, the second padding with "!")."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from export.backbone import check_layout
from export.shipped_configs import SDXL_BASE, materialize_config

# stabilityai/stable-diffusion-xl-base-1.0 as diffusers / transformers ship it.
PUBLISHED = {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}


def test_components_have_the_published_parameter_counts(tmp_path: Path) -> None:
    config = materialize_config(SDXL_BASE, tmp_path / SDXL_BASE)
    check_layout(config)
    with torch.device("meta"):
        built = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2")),
        }
    assert {name: sum(p.numel() for p in m.parameters()) for name, m in built.items()} == PUBLISHED
    first, second = (CLIPTokenizer.from_pretrained(config / name) for name in ("tokenizer", "tokenizer_2"))
    assert first("a red circle").input_ids == second("a red circle").input_ids  # one vocabulary
    assert second.pad_token == "!" and first.pad_token == "<|endoftext|>"
