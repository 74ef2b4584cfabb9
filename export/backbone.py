"""Load a diffusers SD-1.x/2.x-style pipeline directory (with or without its weights), refusing what the graphs
cannot express."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from adapters.fingerprint import canonical_module_name, fingerprinted_parameters, sampled_names
from export.errors import ExportError
from export.variants import pipeline_variants
from export.weights import read_tensors

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


def check_layout(model_dir: Path) -> None:
    """An SD-1.x/2.x-style pipeline directory, or ExportError naming what is missing or unsupported."""
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


def _backbone(model_dir: Path, unet: nn.Module, text_encoder: nn.Module, vae: nn.Module) -> Backbone:
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


def load_backbone(model_dir: Path, variant: str | None = None) -> Backbone:
    """Components in fp32 eval mode, frozen (variant weights, e.g. fp16, are upcast). `variant`: the weights
    variant to load (None: the plain weights, or the one variant a component holds without them,
    export/variants.py). Raises ExportError naming what is missing or unsupported."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    model_dir = Path(model_dir)
    check_layout(model_dir)
    variants = pipeline_variants(model_dir, variant)
    try:
        unet = UNet2DConditionModel.from_pretrained(
            model_dir / "unet", torch_dtype=torch.float32, variant=variants["unet"]
        )
        vae = AutoencoderKL.from_pretrained(model_dir / "vae", torch_dtype=torch.float32, variant=variants["vae"])
        text_encoder = CLIPTextModel.from_pretrained(
            model_dir / "text_encoder", torch_dtype=torch.float32, variant=variants["text_encoder"]
        )
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load the pipeline in {model_dir}: {e}") from e
    return _backbone(model_dir, unet, text_encoder, vae)


def load_backbone_without_weights(model_dir: Path, variant: str | None = None) -> Backbone:
    """The same modules built from the configs on the meta device (shapes, no storage), except the parameters
    `backbone_fingerprint` hashes and the token embedding table, read from the safetensors files: enough for
    `build_spec` and the host's BackboneInfo (what an API replica validates against) in a fraction of the
    memory. Their values are cast to fp32 as `load_backbone` loads them, so the fingerprint is the same."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    model_dir = Path(model_dir)
    check_layout(model_dir)
    variants = pipeline_variants(model_dir, variant)
    try:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(model_dir / "vae"))
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(model_dir / "text_encoder"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read the pipeline's configs in {model_dir}: {e}") from e
    sampled = set(sampled_names(fingerprinted_parameters(unet, text_encoder)))
    embedding = text_encoder.get_input_embeddings().weight  # the host's table: prompt tokens -> vectors
    for component, module in (("unet", unet), ("text_encoder", text_encoder)):
        canonical = partial(canonical_module_name, component)  # how the checkpoint's keys are matched, too
        wanted = {canonical(n): n for n, p in module.named_parameters() if canonical(n) in sampled or p is embedding}
        for name, value in read_tensors(model_dir / component, wanted, canonical, variants[component]).items():
            _materialize(module, wanted[name], value.to(torch.float32))
    return _backbone(model_dir, unet, text_encoder, vae)


def _materialize(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace meta parameter `name` with `value` (frozen), refusing a checkpoint that disagrees with the config."""
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if tuple(getattr(owner, attr).shape) != tuple(value.shape):
        raise ExportError(
            f"{name} is {tuple(value.shape)} in the weights but {tuple(getattr(owner, attr).shape)} in config.json: "
            "the checkpoint does not match its config"
        )
    setattr(owner, attr, nn.Parameter(value, requires_grad=False))
