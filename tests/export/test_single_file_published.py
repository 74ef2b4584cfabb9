"""Slow: checkpoints of the published sizes (SD-1.5, SD-2.1: random fp16 weights, 2.1-2.6 GB files written here)
convert with the shipped configs alone, offline, every weight arriving unchanged under its diffusers name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from export.backbone import load_backbone_without_weights
from export.shipped_configs import CONFIGS_DIR
from export.single_file import convert_single_file
from tests.export.ldm_layout import ldm_from_components

WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}


def random_like(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=generator, dtype=torch.float16) for k, v in state.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_a_published_size_checkpoint_converts_with_the_shipped_configs(name: str, tmp_path: Path) -> None:
    config = CONFIGS_DIR / name
    with torch.device("meta"):
        unet_config, vae_config = (
            UNet2DConditionModel.load_config(config / "unet"),
            AutoencoderKL.load_config(config / "vae"),
        )
        modules = {
            "unet": UNet2DConditionModel.from_config(unet_config),
            "vae": AutoencoderKL.from_config(vae_config),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
        }
    weights = {c: random_like(m.state_dict(), seed) for seed, (c, m) in enumerate(modules.items())}
    layout = "clip" if name == "sd15" else "open_clip"
    ldm = ldm_from_components(weights["unet"], unet_config, weights["vae"], vae_config, weights["text_encoder"], layout)
    ldm = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in ldm.items()}
    file = tmp_path / f"{name}.safetensors"
    save_file(ldm, file)
    del ldm

    conversion = convert_single_file(file, tmp_path / "out")
    assert conversion.prediction_type == ("epsilon" if name == "sd15" else "v_prediction")
    assert conversion.config.startswith(f"shipped {name}:")
    for component, expected in weights.items():
        written = load_file(tmp_path / "out" / component / WEIGHT_FILES[component])
        assert written.keys() == expected.keys(), component
        for key, value in expected.items():
            assert torch.equal(written[key], value), (component, key)  # fp16 as stored, bit for bit
    backbone = load_backbone_without_weights(tmp_path / "out")
    assert backbone.text_dim == (768 if name == "sd15" else 1024)
    assert backbone.latent_size * backbone.vae_scale_factor == (512 if name == "sd15" else 768)
