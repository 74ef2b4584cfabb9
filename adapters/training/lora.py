"""LoRA on the U-Net's attention, projection and feed-forward layers, with peft; saved the diffusers way.

Targets are `adapters.spec.DEFAULT_UNET_TARGETS`, the modules the export banks hold, so the file validates
against the backbone spec, or a subset of them (`LORA_TARGETS`). lora_alpha = rank (scale 1) and peft's
default init (B = 0): training starts from the unchanged backbone.

The text encoder stays frozen unless `text_encoder=True` (diffusers' `--train_text_encoder`). A word the
backbone never read gets nothing useful from it: the shapes tokenizer splits "striped" into four untrained
byte pieces, which also push every later word of the caption three positions on. A LoRA on the text encoder's
attention and MLP (`DEFAULT_TEXT_ENCODER_TARGETS`, banked by the export too) can learn to read such a word.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from adapters.errors import AdapterError
from adapters.spec import DEFAULT_TEXT_ENCODER_TARGETS
from adapters.training.data import TrainingSet
from adapters.training.loop import Settings, cached_text, frozen_text, text_path, train
from adapters.training.options import LORA_TARGETS, MAX_RANK


def train_lora(
    pipe: StableDiffusionPipeline,
    data: TrainingSet,
    settings: Settings,
    rank: int = 8,
    preserve: bool = False,
    targets: str = "all",
    text_encoder: bool = False,
) -> dict[str, float]:
    """Adds a peft adapter named "default" to `pipe.unet` (and `pipe.text_encoder`) and trains it in place.

    `preserve`: ordinary rows are distilled to the backbone's prediction with the adapter switched off.
    `targets`: a key of `LORA_TARGETS`. `text_encoder`: also a LoRA on the text encoder, same rank.
    """
    from peft import LoraConfig

    if not 1 <= rank <= MAX_RANK:
        raise AdapterError(f"--rank must be 1 to {MAX_RANK} (the default rank cap), got {rank}")
    if targets not in LORA_TARGETS:
        raise AdapterError(f"--lora-targets must be one of {', '.join(LORA_TARGETS)}, got {targets!r}")
    adapted = [pipe.unet, pipe.text_encoder] if text_encoder else [pipe.unet]
    for model, modules in zip(adapted, (LORA_TARGETS[targets], DEFAULT_TEXT_ENCODER_TARGETS), strict=False):
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(modules), init_lora_weights=True))
    params = [p for model in adapted for p in model.parameters() if p.requires_grad]
    # A text-side LoRA changes the captions' hidden states at every step, so they cannot be memoized; without
    # one the frozen text path serves the adapter and the baseline from one cache.
    encode = text_path(pipe) if text_encoder else frozen_text(pipe)
    backbone_text = cached_text(text_path(pipe)) if text_encoder else encode  # the baseline calls it adapters-off

    def denoise(x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return pipe.unet(x, t, hidden).sample

    def backbone(x: torch.Tensor, t: torch.Tensor, captions: list[str]) -> torch.Tensor:
        with adapters_off(adapted):
            return pipe.unet(x, t, backbone_text(captions)).sample

    return train(pipe, data, params, encode, denoise, settings, backbone if preserve else None)


@contextmanager
def adapters_off(models: list[torch.nn.Module]) -> Iterator[None]:
    """The peft adapters of `models` disabled for the block's duration: the frozen backbone."""
    for model in models:
        model.disable_adapters()
    try:
        yield
    finally:
        for model in models:
            model.enable_adapters()


def save_lora(pipe: StableDiffusionPipeline, path: Path) -> None:
    """`save_lora_weights` with the LoraConfig as metadata, so loaders resolve rank and alpha exactly."""
    from peft import get_peft_model_state_dict

    text_config = getattr(pipe.text_encoder, "peft_config", {}).get("default")  # set by text_encoder=True
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        StableDiffusionPipeline.save_lora_weights(
            scratch,
            unet_lora_layers=get_peft_model_state_dict(pipe.unet),
            unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(),
            text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder) if text_config else None,
            text_encoder_lora_adapter_metadata=text_config.to_dict() if text_config else None,
            weight_name=path.name,
        )
        (Path(scratch) / path.name).replace(path)
