"""Load a diffusers SD-1.x/2.x- or SDXL-style pipeline directory (with or without its weights), refusing what the
graphs cannot express.

SDXL (`StableDiffusionXLPipeline`) adds a second text encoder (`CLIPTextModelWithProjection`, its own tokenizer)
whose pooled, projected embedding and six time ids condition the U-Net (`addition_embed_type="text_time"`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from adapters.fingerprint import canonical_module_name, fingerprinted_parameters, sampled_names
from adapters.spec import BackboneSpec
from export.errors import ExportError
from export.graphs import GraphModules, XLDims, build_graph_modules
from export.variants import pipeline_variants
from export.weights import read_tensors

REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
XL_COMPONENTS = ("text_encoder_2", "tokenizer_2")  # what an SDXL pipeline adds
EXPECTED_CLASSES = {
    "unet": "UNet2DConditionModel",
    "vae": "AutoencoderKL",
    "text_encoder": "CLIPTextModel",
    "text_encoder_2": "CLIPTextModelWithProjection",
}


@dataclass
class Backbone:
    model_dir: Path
    unet: nn.Module
    text_encoder: nn.Module
    vae: nn.Module
    scheduler_config: dict
    prediction_type: str
    text_encoder_2: nn.Module | None = None  # SDXL's second encoder; None for SD-1.x/2.x
    # SDXL: a request without a negative prompt gets zeros as its negative embeddings (model_index.json)
    force_zeros_for_empty_prompt: bool = False

    @property
    def is_xl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def text_dim(self) -> int:
        """The U-Net's context width: SDXL concatenates both encoders' hidden states."""
        width = int(self.text_encoder.config.hidden_size)
        return width + (int(self.text_encoder_2.config.hidden_size) if self.text_encoder_2 is not None else 0)

    @property
    def pooled_dim(self) -> int:
        """SDXL: the second encoder's projected (pooled) embedding width; 0 otherwise."""
        return int(self.text_encoder_2.config.projection_dim) if self.text_encoder_2 is not None else 0

    def graph_modules(self, spec: BackboneSpec, vpt_tokens: int) -> GraphModules:
        """Every graph of this backbone as PyTorch modules (export/graphs.py), banked per `spec`."""
        return build_graph_modules(self.unet, self.text_encoder, self.vae, spec, vpt_tokens, self.text_encoder_2)

    @property
    def xl_dims(self) -> XLDims | None:
        if self.text_encoder_2 is None:
            return None
        return XLDims(text_dim_2=int(self.text_encoder_2.config.hidden_size), pooled_dim=self.pooled_dim)

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


def _index(model_dir: Path) -> dict:
    index_file = model_dir / "model_index.json"
    if not index_file.is_file():
        raise ExportError(f"{model_dir} is not a diffusers pipeline directory (no model_index.json)")
    return json.loads(index_file.read_text())


def is_xl_layout(index: dict) -> bool:
    """An SDXL pipeline names a second text encoder (a refiner, which has only that one, is refused below)."""
    return bool(index.get("text_encoder_2")) and (index.get("text_encoder_2") or [None])[0] is not None


def check_layout(model_dir: Path) -> None:
    """An SD-1.x/2.x- or SDXL-style pipeline directory, or ExportError naming what is missing or unsupported."""
    index = _index(model_dir)
    required = REQUIRED_COMPONENTS + (XL_COMPONENTS if is_xl_layout(index) else ())
    if missing := [c for c in required if not (model_dir / c).is_dir() or not index.get(c) or index[c][0] is None]:
        raise ExportError(
            f"{model_dir} lacks pipeline components {', '.join(missing)}: an SD-1.x/2.x or SDXL layout is required"
        )
    for component in required:
        class_name = EXPECTED_CLASSES.get(component)
        found = index[component][1] if isinstance(index[component], list) else index[component]
        if class_name is not None and found != class_name:
            raise ExportError(
                f"unsupported model: {component} is {found}, diffplex handles {class_name} "
                "(Stable Diffusion 1.x/2.x and SDXL pipelines)"
            )


def _backbone(
    model_dir: Path, unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, text_encoder_2: nn.Module | None = None
) -> Backbone:
    _check_conditioning(unet, text_encoder, text_encoder_2)
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval().requires_grad_(False)
    return Backbone(
        model_dir=model_dir,
        unet=unet,
        text_encoder=text_encoder,
        vae=vae,
        scheduler_config=scheduler_config,
        prediction_type=str(scheduler_config.get("prediction_type", "epsilon")),
        text_encoder_2=text_encoder_2,
        force_zeros_for_empty_prompt=bool(_index(model_dir).get("force_zeros_for_empty_prompt", False)),
    )


def _check_conditioning(unet: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module | None) -> None:
    """The U-Net's extra conditioning must be what the pipeline's encoders feed: none for SD-1.x/2.x, SDXL's
    `text_time` (pooled embedding + six time ids) with a second encoder."""
    added = unet.config.get("addition_embed_type")
    if unet.config.get("class_embed_type") or added not in (None, "text_time"):
        kind = added or unet.config.get("class_embed_type")
        raise ExportError(f"unsupported model: the U-Net needs extra conditioning of type {kind!r}")
    if (added == "text_time") != (text_encoder_2 is not None):
        raise ExportError(
            "unsupported model: an SDXL-style U-Net (text_time conditioning) needs text_encoder_2, and only it does"
        )
    if text_encoder_2 is None:
        return
    context = int(text_encoder.config.hidden_size) + int(text_encoder_2.config.hidden_size)
    time_ids = 6 * int(unet.config.addition_time_embed_dim)
    pooled = int(text_encoder_2.config.projection_dim)
    if int(unet.config.cross_attention_dim) != context or unet.config.projection_class_embeddings_input_dim != (
        time_ids + pooled
    ):
        raise ExportError(
            f"the U-Net does not fit the text encoders: cross_attention_dim {unet.config.cross_attention_dim} "
            f"(encoders: {context}), projection_class_embeddings_input_dim "
            f"{unet.config.projection_class_embeddings_input_dim} (six time ids and the pooled embedding: "
            f"{time_ids + pooled})"
        )


def load_backbone(model_dir: Path, variant: str | None = None) -> Backbone:
    """Components in fp32 eval mode, frozen (variant weights, e.g. fp16, are upcast). `variant`: the weights
    variant to load (None: the plain weights, or the one variant a component holds without them,
    export/variants.py). Raises ExportError naming what is missing or unsupported."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

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
        text_encoder_2 = None
        if "text_encoder_2" in variants:
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                model_dir / "text_encoder_2", torch_dtype=torch.float32, variant=variants["text_encoder_2"]
            )
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load the pipeline in {model_dir}: {e}") from e
    return _backbone(model_dir, unet, text_encoder, vae, text_encoder_2)


def load_backbone_without_weights(model_dir: Path, variant: str | None = None) -> Backbone:
    """The same modules built from the configs on the meta device (shapes, no storage), except the parameters
    `backbone_fingerprint` hashes and the token embedding table, read from the safetensors files: enough for
    `build_spec` and the host's BackboneInfo (what an API replica validates against) in a fraction of the
    memory. Their values are cast to fp32 as `load_backbone` loads them, so the fingerprint is the same."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    model_dir = Path(model_dir)
    check_layout(model_dir)
    variants = pipeline_variants(model_dir, variant)
    try:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(model_dir / "vae"))
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(model_dir / "text_encoder"))
            text_encoder_2 = None
            if "text_encoder_2" in variants:
                config_2 = CLIPTextConfig.from_pretrained(model_dir / "text_encoder_2")
                text_encoder_2 = CLIPTextModelWithProjection(config_2)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read the pipeline's configs in {model_dir}: {e}") from e
    sampled = set(sampled_names(fingerprinted_parameters(unet, text_encoder, text_encoder_2)))
    encoders = {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    # The host's tables (prompt tokens -> vectors) come with the sampled parameters.
    embeddings = [m.get_input_embeddings().weight for m in (text_encoder, text_encoder_2) if m is not None]
    for component, module in encoders.items():
        if module is None:
            continue
        canonical = partial(canonical_module_name, component)  # how the checkpoint's keys are matched, too
        wanted = {
            canonical(n): n
            for n, p in module.named_parameters()
            if canonical(n) in sampled or any(p is e for e in embeddings)
        }
        for name, value in read_tensors(model_dir / component, wanted, canonical, variants[component]).items():
            _materialize(module, wanted[name], value.to(torch.float32))
    return _backbone(model_dir, unet, text_encoder, vae, text_encoder_2)


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
