"""Which model a single-file checkpoint in the original LDM / A1111 key layout holds, from its tensor names and a
few shapes: SD-1.x and SD-2.x are served; SDXL, inpainting and other U-Nets, and anything unrecognised are refused
with what was found.

The key names are diffusers' own (`diffusers.loaders.single_file_utils.CHECKPOINT_KEY_NAMES`, pinned by
tests/export/test_single_file_family.py), so a checkpoint detected here is one diffusers' loaders convert.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from export.checkpoint_file import CheckpointKeys
from export.errors import ExportError

PredictionType = Literal["epsilon", "v_prediction"]
PREDICTION_TYPES: tuple[PredictionType, ...] = ("epsilon", "v_prediction")

UNET = "model.diffusion_model."
UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"  # CHECKPOINT_KEY_NAMES["inpainting"]
UNET_CONV_OUT = "model.diffusion_model.out.2.weight"
UNET_CLASS_EMBEDDING = "model.diffusion_model.label_emb."  # upscalers, unCLIP: a U-Net with extra conditioning
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"  # ["clip"]
CLIP_TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
OPEN_CLIP = "cond_stage_model.model.token_embedding.weight"  # ["open_clip"]
SDXL = "conditioner.embedders."  # ["xl_base"], ["xl_refiner"], ["clip_sdxl"]: SDXL's text encoders
CONTROLNET = "control_model."  # ["controlnet"]
# The SD-2 base model (512 px, epsilon) is told from the 768 px v-prediction one only by this training step, which
# a .ckpt may record (diffusers, single_file_utils._legacy_load_scheduler); a .safetensors never does.
SD2_BASE_GLOBAL_STEP = 875000
CONFIG_HINT = "give the model's own diffusers config directory (convert --config DIR, DIFFPLEX_MODEL_CONFIG_DIR)"


@dataclass(frozen=True)
class Family:
    name: Literal["sd1", "sd2"]
    label: str
    prediction_type: PredictionType  # the caller's, or inferred as diffusers does
    shipped_config: str  # export/single_file_configs/<this>: the configs used when the caller gives none


def _found(keys: CheckpointKeys, limit: int = 6) -> str:
    """The checkpoint's key groups and their sizes, for a refusal that says what the file does hold."""
    if not keys.shapes:
        return "no tensors at all"
    groups = Counter(k.split(".")[0] for k in keys.shapes)
    listed = ", ".join(f"{name}.* ({count})" for name, count in groups.most_common(limit))
    more = f" and {len(groups) - limit} more groups" if len(groups) > limit else ""
    return f"{len(keys.shapes)} tensors under {listed}{more}"


def _refuse_other_models(keys: CheckpointKeys) -> None:
    """ExportError for the models that are recognised and not served (yet)."""
    if keys.with_prefix(SDXL):
        raise ExportError(
            f"{keys.path.name} is an SDXL checkpoint (conditioner.embedders.*: SDXL's two text encoders): SDXL "
            "checkpoints are not served yet; serve an SD-1.x or SD-2.x model"
        )
    if keys.with_prefix(CONTROLNET):
        raise ExportError(f"{keys.path.name} is a ControlNet (control_model.*), not a text-to-image model")
    if any(".lora_down." in k or ".lora_A." in k or k.startswith("lora_") for k in keys.shapes):
        raise ExportError(
            f"{keys.path.name} is a LoRA adapter, not a model: upload it as a tenant adapter (PUT /v1/adapters/NAME)"
        )


def _check_unet(keys: CheckpointKeys) -> None:
    if not keys.has(UNET_CONV_IN):
        what = "a U-Net without SD's input_blocks (another architecture)" if keys.with_prefix(UNET) else _found(keys)
        raise ExportError(
            f"{keys.path.name} is no Stable Diffusion 1.x/2.x checkpoint: found {what}; expected the LDM layout "
            "(model.diffusion_model.*, first_stage_model.*, cond_stage_model.*)"
        )
    in_channels = keys.shapes[UNET_CONV_IN][1]
    if in_channels != 4:
        kind = {9: "an inpainting model", 8: "an instruct-pix2pix model", 7: "an upscaler"}.get(in_channels, "")
        raise ExportError(
            f"{keys.path.name}: its U-Net takes {in_channels} input channels{f' ({kind})' if kind else ''}; diffplex "
            "serves text-to-image U-Nets on 4 latent channels"
        )
    if keys.has(UNET_CONV_OUT) and keys.shapes[UNET_CONV_OUT][0] != 4:
        raise ExportError(f"{keys.path.name}: its U-Net predicts {keys.shapes[UNET_CONV_OUT][0]} channels, not 4")
    if keys.with_prefix(UNET_CLASS_EMBEDDING):
        raise ExportError(
            f"{keys.path.name}: its U-Net takes class or image embeddings (label_emb.*, an upscaler or unCLIP "
            "model); diffplex serves text-only conditioning"
        )
    if not keys.has(VAE + "encoder.conv_in.weight"):
        raise ExportError(
            f"{keys.path.name} has no VAE (first_stage_model.*): a U-Net-only file cannot be served; use a full "
            "checkpoint"
        )


def detect_family(keys: CheckpointKeys, prediction_type: PredictionType | None = None) -> Family:
    """The family of a checkpoint diffplex serves, or ExportError saying what the file is and why it is refused.
    `prediction_type`: what the caller knows the model predicts; None: diffusers' inference (SD-1: epsilon; SD-2:
    v-prediction unless a .ckpt records the base model's training step)."""
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ExportError(f"prediction type {prediction_type!r}: choose one of {', '.join(PREDICTION_TYPES)}")
    _refuse_other_models(keys)
    _check_unet(keys)
    if keys.has(CLIP):
        return Family("sd1", "SD-1.x", prediction_type or "epsilon", "sd15")
    if keys.has(OPEN_CLIP):
        inferred: PredictionType = "epsilon" if keys.global_step == SD2_BASE_GLOBAL_STEP else "v_prediction"
        chosen = prediction_type or inferred
        return Family("sd2", "SD-2.x", chosen, "sd21" if chosen == "v_prediction" else "sd21-base")
    text = keys.with_prefix("cond_stage_model.")
    found = f"cond_stage_model.* keys of another layout (e.g. {sorted(text)[0]})" if text else "no text encoder"
    raise ExportError(
        f"{keys.path.name}: {found}; expected CLIP (cond_stage_model.transformer.text_model.*, SD-1.x) or OpenCLIP "
        "(cond_stage_model.model.*, SD-2.x)"
    )


def _context_width(keys: CheckpointKeys) -> int | None:
    """The U-Net's cross-attention input width (the text encoder's hidden size it expects)."""
    for name, shape in keys.shapes.items():
        if name.startswith(UNET) and name.endswith("attn2.to_k.weight"):
            return shape[-1]
    return None


def _linear_projection(keys: CheckpointKeys) -> bool | None:
    """Whether the U-Net's transformers project in with a linear layer (SD-2) or a 1x1 convolution (SD-1)."""
    for name, shape in keys.shapes.items():
        if name.startswith(UNET) and name.endswith(".proj_in.weight"):
            return len(shape) == 2
    return None


# What the shipped configs build, per family: (what, expected value, how the checkpoint shows it).
_SHIPPED_SHAPES = {
    "sd1": {"U-Net base width": 320, "cross-attention width": 768, "text width": 768, "vocabulary": 49408},
    "sd2": {"U-Net base width": 320, "cross-attention width": 1024, "text width": 1024, "vocabulary": 49408},
}


def check_shipped_config(keys: CheckpointKeys, family: Family) -> None:
    """ExportError unless the checkpoint has the published architecture of its family, the one the shipped configs
    describe (a checkpoint of another size needs its own configs)."""
    tokens = keys.shapes.get(CLIP_TOKENS if family.name == "sd1" else OPEN_CLIP)
    found = {
        "U-Net base width": keys.shapes[UNET_CONV_IN][0],
        "cross-attention width": _context_width(keys),
        "text width": tokens[1] if tokens else None,
        "vocabulary": tokens[0] if tokens else None,
    }
    wrong = [
        f"{what} {found[what]} (expected {want})"
        for what, want in _SHIPPED_SHAPES[family.name].items()
        if found[what] != want
    ]
    linear = _linear_projection(keys)
    if linear is not None and linear != (family.name == "sd2"):
        wrong.append(f"{'linear' if linear else '1x1-convolution'} attention projections")
    if wrong:
        raise ExportError(
            f"{keys.path.name} is {family.label}-shaped but not the published architecture the shipped configs "
            f"describe: {'; '.join(wrong)}; {CONFIG_HINT}"
        )
