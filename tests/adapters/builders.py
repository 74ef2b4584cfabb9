"""Tiny random SD-1.x-shaped components and adapter files for the adapters tests (built in seconds on CPU)."""

from __future__ import annotations

import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save as save_safetensors_bytes
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from adapters.spec import BackboneSpec
from adapters.types import LoRAAdapter, LoRALayer, TextualInversion, VPTAdapter
from models.shapes.tokenizer import write_clip_tokenizer

CORPUS = ["a red circle on a blue background", "a photo of a green square", "two small striped stars at night"]
UNET_LORA_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_LORA_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def tiny_tokenizer(out_dir: Path) -> CLIPTokenizer:
    write_clip_tokenizer(CORPUS, out_dir)
    return CLIPTokenizer.from_pretrained(out_dir)


def tiny_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0, **config: Any) -> CLIPTextModel:
    """CLIP-shaped, width 32; `config` overrides (the SD-2 shape: GELU)."""
    torch.manual_seed(seed)
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "projection_dim": 32,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return CLIPTextModel(CLIPTextConfig(**(fields | config))).eval()


def tiny_unet(seed: int = 0, **config: Any) -> UNet2DConditionModel:
    """SD-1.x-shaped; `config` overrides (the SD-2 shape: per-block heads, linear projections, upcast attention)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        **{
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "norm_num_groups": 32,
            **config,
        }
    ).eval()


def unet_inputs(batch: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "encoder_hidden_states": torch.randn(batch, 77, 32, generator=g),
    }


def random_lora(spec: BackboneSpec, names: list[str], rank: int, alpha: float, seed: int) -> LoRAAdapter:
    g = torch.Generator().manual_seed(seed)
    targets = {t.name: t for t in spec.lora_targets}
    layers = {}
    for name in names:
        t = targets[name]
        layers[name] = LoRALayer(torch.randn(rank, t.d_in, generator=g), torch.randn(t.d_out, rank, generator=g), alpha)
    return LoRAAdapter(layers)


def random_ti(tokens: dict[str, int], dim: int, seed: int) -> TextualInversion:
    g = torch.Generator().manual_seed(seed)
    return TextualInversion({token: torch.randn(n, dim, generator=g) for token, n in tokens.items()})


def random_vpt(spec: BackboneSpec, depth: str, tokens: int, seed: int) -> VPTAdapter:
    g = torch.Generator().manual_seed(seed)
    dims = spec.vpt_dims[:1] if depth == "shallow" else spec.vpt_dims
    return VPTAdapter(depth, tuple(torch.randn(tokens, d, generator=g) for d in dims), spec.fingerprint)  # type: ignore[arg-type]


def peft_lora_models(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, rank: int, alpha: float, seed: int
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Copies of the models with a random, non-zero peft LoRA adapter named "default"."""
    from peft import LoraConfig

    unet, text_encoder = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=UNET_LORA_MODULES, init_lora_weights=False))
    text_encoder.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=TEXT_LORA_MODULES, init_lora_weights=False)
    )
    return unet, text_encoder


def save_diffusers_lora(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, out_dir: Path, with_metadata: bool
) -> Path:
    """Write the peft adapters as diffusers' training scripts do (`save_lora_weights`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    metadata = {}
    if with_metadata:
        metadata = {
            "unet_lora_adapter_metadata": unet.peft_config["default"].to_dict(),
            "text_encoder_lora_adapter_metadata": text_encoder.peft_config["default"].to_dict(),
        }
    StableDiffusionPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)),
        **metadata,
    )
    return out_dir / "pytorch_lora_weights.safetensors"


def peft_to_kohya(peft_state_dict: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """`unet.<path>.lora_A.weight` -> `lora_unet_<path_with_underscores>.lora_down.weight` (+ `.alpha`).

    kohya-ss names SD-1.x text-encoder modules under `text_model.` (transformers < 5 layout).
    """
    out = {}
    for key, tensor in peft_state_dict.items():
        module, _, kind = key.rpartition(".lora_")
        component, path = module.split(".", 1)
        prefix = "lora_unet_" if component == "unet" else "lora_te_text_model_"
        name = prefix + path.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def kohya_lora_bytes(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, rank: int, alpha: float, seed: int
) -> bytes:
    """A random kohya-ss LoRA file (`lora_unet_*` / `lora_te_*` keys with `.alpha`) of `rank` on every default
    target of both models: peft's random init written by `save_lora_weights`, renamed by `peft_to_kohya`."""
    from diffusers.utils import convert_state_dict_to_peft
    from safetensors.torch import load as load_safetensors_bytes

    lora_unet, lora_te = peft_lora_models(unet, text_encoder, rank, alpha, seed)
    with tempfile.TemporaryDirectory() as scratch:
        saved = save_diffusers_lora(lora_unet, lora_te, Path(scratch), with_metadata=False)
        tensors = load_safetensors_bytes(saved.read_bytes())
    # The text encoder's part is saved in diffusers' lora_linear_layer naming: peft names, as for the U-Net.
    tensors |= convert_state_dict_to_peft({k: v for k, v in tensors.items() if k.startswith("text_encoder.")})
    peft = {k: v for k, v in tensors.items() if ".lora_A." in k or ".lora_B." in k}
    return safetensors_bytes(peft_to_kohya(peft, alpha))


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save_safetensors_bytes({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def torch_save_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
