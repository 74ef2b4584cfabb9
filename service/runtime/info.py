"""BackboneInfo, the backbone as the host sees it, from an export's manifest or from a pipeline's modules.

Neither needs the weights that run the model: an export's comes from its manifest, tokenizer, scheduler and
token embedding table; a pipeline's from modules that may be built without weights
(export/backbone.py `load_backbone_without_weights`). So an API replica of role "api", which only validates
requests, holds no graph session and no model parameter (service/runtime/loader.py `load_backbone_info`).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from adapters.spec import DEFAULT_TEXT_ENCODER_TARGETS, DEFAULT_UNET_TARGETS, build_spec
from export.backbone import Backbone
from export.graph_names import SHALLOW_OF
from export.manifest import TOKEN_EMBEDDING, TOKEN_EMBEDDING_2, TOKEN_EMBEDDINGS, Manifest
from export.step_cache import StepCacheDims
from service.runtime.base import BackboneInfo, XLInfo


def export_info(export_dir: Path, manifest: Manifest) -> BackboneInfo:
    fixed = manifest.fixed_lora_rank
    tables = load_file(export_dir / TOKEN_EMBEDDINGS)
    xl = None
    if manifest.sdxl is not None:
        xl = XLInfo(
            tokenizer_dir=export_dir / "tokenizer_2",
            token_embedding=tables[TOKEN_EMBEDDING_2],
            pooled_dim=int(manifest.sdxl["pooled_dim"]),
            force_zeros_for_empty_prompt=bool(manifest.sdxl["force_zeros_for_empty_prompt"]),
        )
    return BackboneInfo(
        spec=manifest.spec,
        lora_rank=manifest.lora_rank if fixed is None else fixed,  # equal in every export that fixed it
        vpt_tokens=manifest.vpt_tokens,
        latent_channels=manifest.latent_channels,
        latent_size=manifest.latent_size,
        latent_multiple=manifest.latent_multiple,
        vae_scale_factor=manifest.vae_scale_factor,
        scaling_factor=manifest.scaling_factor,
        scheduler_config=json.loads((export_dir / "scheduler" / "scheduler_config.json").read_text()),
        tokenizer_dir=export_dir / "tokenizer",
        token_embedding=tables[TOKEN_EMBEDDING],
        lora_rank_fixed=fixed is not None,
        xl=xl,
        step_cache_channels=_export_step_cache(manifest),
    )


def _export_step_cache(manifest: Manifest) -> int:
    """The deep feature's channels where the export holds both shallow U-Nets; 0 where it has not."""
    if manifest.step_cache is None or any(g not in manifest.graphs for g in SHALLOW_OF.values()):
        return 0
    return manifest.step_cache.feature_channels


def pipeline_info(
    backbone: Backbone,
    lora_rank: int,
    vpt_tokens: int,
    unet_targets: tuple[str, ...] = DEFAULT_UNET_TARGETS,
    text_encoder_targets: tuple[str, ...] = DEFAULT_TEXT_ENCODER_TARGETS,
) -> BackboneInfo:
    """R (the rank cap) and P are the PyTorch backend's choice (an export records its own); P is 0 where the U-Net
    takes no VPT. The reference modules take banks of any rank, so every call is packed at its own."""
    spec = build_spec(
        backbone.unet, backbone.text_encoder, unet_targets, text_encoder_targets, text_encoder_2=backbone.text_encoder_2
    )
    return BackboneInfo(
        spec=spec,
        lora_rank=lora_rank,
        vpt_tokens=vpt_tokens if spec.vpt_blocks else 0,
        latent_channels=backbone.latent_channels,
        latent_size=backbone.latent_size,
        latent_multiple=backbone.latent_multiple,
        vae_scale_factor=backbone.vae_scale_factor,
        scaling_factor=float(backbone.vae.config.scaling_factor),
        scheduler_config=backbone.scheduler_config,
        tokenizer_dir=backbone.model_dir / "tokenizer",
        token_embedding=backbone.text_encoder.get_input_embeddings().weight.detach().cpu(),
        xl=_xl_info(backbone),
        step_cache_channels=_pipeline_step_cache(backbone),
    )


def _pipeline_step_cache(backbone: Backbone) -> int:
    """The PyTorch backend runs the shallow path wherever the U-Net can be split (export/step_cache.py)."""
    dims = StepCacheDims.of(backbone.unet)
    return 0 if dims is None else dims.feature_channels


def _xl_info(backbone: Backbone) -> XLInfo | None:
    if backbone.text_encoder_2 is None:
        return None
    return XLInfo(
        tokenizer_dir=backbone.model_dir / "tokenizer_2",
        token_embedding=backbone.text_encoder_2.get_input_embeddings().weight.detach().cpu(),
        pooled_dim=backbone.pooled_dim,
        force_zeros_for_empty_prompt=backbone.force_zeros_for_empty_prompt,
    )
