"""SDXL adapter files for the tests: peft LoRAs on all three models written by `save_lora_weights`, their kohya
rename, and random inputs for the SDXL U-Net."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from tests.adapters.builders import TEXT_LORA_MODULES, peft_lora_models
from tests.export.sdxl_builders import POOLED_DIM, TEXT_DIM, TEXT_DIM_2

KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te1_text_model_", "text_encoder_2": "lora_te2_text_model_"}


def sdxl_unet_inputs(batch: int, seed: int = 1) -> dict:
    """The SDXL U-Net's inputs: both encoders' context, the pooled embedding and the six time ids."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "encoder_hidden_states": torch.randn(batch, 77, TEXT_DIM + TEXT_DIM_2, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, POOLED_DIM, generator=g),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]).repeat(batch, 1),
        },
    }


def prompt_ids(vocab_size: int, batch: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, 77), generator=torch.Generator().manual_seed(2))


def peft_sdxl_models(models: tuple[nn.Module, ...], rank: int, alpha: float, seed: int) -> tuple[nn.Module, ...]:
    """Copies of (unet, text_encoder, text_encoder_2) with a random, non-zero peft LoRA adapter named "default"."""
    from peft import LoraConfig

    unet, text_encoder, text_encoder_2 = models
    lora_unet, lora_te = peft_lora_models(unet, text_encoder, rank, alpha, seed)
    lora_te2 = copy.deepcopy(text_encoder_2)
    lora_te2.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=TEXT_LORA_MODULES, init_lora_weights=False)
    )
    return lora_unet, lora_te, lora_te2


def save_sdxl_lora(models: tuple[nn.Module, ...], out_dir: Path) -> Path:
    """Write the peft adapters as diffusers' SDXL training script does, with their LoraConfig metadata."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    unet, text_encoder, text_encoder_2 = models
    StableDiffusionXLPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)),
        text_encoder_2_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder_2)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=text_encoder.peft_config["default"].to_dict(),
        text_encoder_2_lora_adapter_metadata=text_encoder_2.peft_config["default"].to_dict(),
    )
    return out_dir / "pytorch_lora_weights.safetensors"


def peft_to_sdxl_kohya(peft_state_dict: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """`<component>.<path>.lora_A.weight` -> kohya-ss SDXL names: `lora_unet_*`, `lora_te1_text_model_*` and
    `lora_te2_text_model_*` with `.lora_down.weight` / `.lora_up.weight` / `.alpha`."""
    out = {}
    for key, tensor in peft_state_dict.items():
        module, _, kind = key.rpartition(".lora_")
        component, path = module.split(".", 1)
        name = KOHYA_PREFIX[component] + path.removeprefix("text_model.").replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def sdxl_kohya_from_diffusers(lora_file: Path, alpha: float) -> dict[str, torch.Tensor]:
    """The LoRA `save_sdxl_lora` wrote, renamed to kohya-ss SDXL names (as published SDXL LoRAs mostly are)."""
    import safetensors.torch
    from diffusers.utils import convert_state_dict_to_peft

    keys = safetensors.torch.load_file(lora_file)
    for prefix in ("text_encoder.", "text_encoder_2."):  # saved in diffusers' lora_linear_layer naming
        keys |= convert_state_dict_to_peft({k: v for k, v in keys.items() if k.startswith(prefix)})
    return peft_to_sdxl_kohya({k: v for k, v in keys.items() if ".lora_A." in k or ".lora_B." in k}, alpha)
