"""LoRA on the U-Net's attention, projection and feed-forward layers, with peft; saved the diffusers way.

Targets are `adapters.spec.DEFAULT_UNET_TARGETS`, the modules the export banks hold, so the file validates
against the backbone spec, or a subset of them (`LORA_TARGETS`). lora_alpha = rank (scale 1) and peft's
default init (B = 0): training starts from the unchanged backbone. The text encoder stays frozen: the
concept word's existing embedding is enough for the U-Net to learn what to draw for it, and a U-Net-only
LoRA is the cheapest to serve.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from adapters.errors import AdapterError
from adapters.spec import DEFAULT_UNET_TARGETS
from adapters.training.data import TrainingSet
from adapters.training.loop import Settings, frozen_text, train

MAX_RANK = 16  # the export's default R (`diffplex export --lora-rank`)

# `--lora-targets`: every banked module, or only the cross-attention's key and value projections (Custom
# Diffusion, Kumari et al. 2023), which act on an image only through the prompt's tokens. That is the paper's
# case for leaving other prompts alone; on the shapes backbone the striped LoRA drifted more this way, in the
# fill of prompts that never name stripes (adapters/README.md).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "all": DEFAULT_UNET_TARGETS,
    "cross-attention": ("attn2.to_k", "attn2.to_v"),
}


def train_lora(
    pipe: StableDiffusionPipeline,
    data: TrainingSet,
    settings: Settings,
    rank: int = 8,
    preserve: bool = False,
    targets: str = "all",
) -> dict[str, float]:
    """Adds a peft adapter named "default" to `pipe.unet` and trains it in place.

    `preserve`: ordinary rows are distilled to the backbone's prediction with the adapter switched off.
    `targets`: a key of `LORA_TARGETS`.
    """
    from peft import LoraConfig

    if not 1 <= rank <= MAX_RANK:
        raise AdapterError(f"--rank must be 1 to {MAX_RANK} (the export's R), got {rank}")
    if targets not in LORA_TARGETS:
        raise AdapterError(f"--lora-targets must be one of {', '.join(LORA_TARGETS)}, got {targets!r}")
    pipe.unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS[targets]), init_lora_weights=True)
    )
    params = [p for p in pipe.unet.parameters() if p.requires_grad]

    def denoise(x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return pipe.unet(x, t, hidden).sample

    def backbone(x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        pipe.unet.disable_adapters()
        try:
            return pipe.unet(x, t, hidden).sample
        finally:
            pipe.unet.enable_adapters()

    return train(pipe, data, params, frozen_text(pipe), denoise, settings, backbone if preserve else None)


def save_lora(pipe: StableDiffusionPipeline, path: Path) -> None:
    """`save_lora_weights` with the LoraConfig as metadata, so loaders resolve rank and alpha exactly."""
    from peft import get_peft_model_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        StableDiffusionPipeline.save_lora_weights(
            scratch,
            unet_lora_layers=get_peft_model_state_dict(pipe.unet),
            unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(),
            weight_name=path.name,
        )
        (Path(scratch) / path.name).replace(path)
