"""Load a diffusers SD-1.x/2.x-style pipeline directory for export, refusing what the graphs cannot express."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.errors import ExportError

REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class Backbone:
    model_dir: Path
    unet: nn.Module
    text_encoder: nn.Module
    vae: nn.Module
    scheduler_config: dict
    prediction_type: str

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def text_dim(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8 for SD, 4 for the shapes backbone)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_multiple(self) -> int:
        """Each U-Net down block but the last halves the latent, so its sides must divide by this."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return int(self.unet.config.sample_size)


def load_backbone(model_dir: Path) -> Backbone:
    """Components in fp32 eval mode, frozen. Raises ExportError naming what is missing or unsupported."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    model_dir = Path(model_dir)
    index_file = model_dir / "model_index.json"
    if not index_file.is_file():
        raise ExportError(f"{model_dir} is not a diffusers pipeline directory (no model_index.json)")
    index = json.loads(index_file.read_text())
    if missing := [c for c in REQUIRED_COMPONENTS if not (model_dir / c).is_dir() or c not in index]:
        raise ExportError(
            f"{model_dir} lacks pipeline components {', '.join(missing)}: an SD-1.x/2.x layout is required"
        )
    expected = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}
    for component, class_name in expected.items():
        found = index[component][1] if isinstance(index[component], list) else index[component]
        if found != class_name:
            raise ExportError(
                f"unsupported model: {component} is {found}, export handles {class_name} "
                "(Stable Diffusion 1.x/2.x-style pipelines)"
            )
    try:
        unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(model_dir / "vae", torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder", torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load the pipeline in {model_dir}: {e}") from e
    if unet.config.get("addition_embed_type") or unet.config.get("class_embed_type"):
        raise ExportError("unsupported model: the U-Net needs extra conditioning (SDXL-style added embeddings)")
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return Backbone(
        model_dir=model_dir,
        unet=unet,
        text_encoder=text_encoder,
        vae=vae,
        scheduler_config=scheduler_config,
        prediction_type=str(scheduler_config.get("prediction_type", "epsilon")),
    )
