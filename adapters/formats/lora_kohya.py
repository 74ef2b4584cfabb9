"""kohya-ss LoRA files: `lora_unet_<path>` / `lora_te_<path>` with `.lora_down.weight`, `.lora_up.weight`, `.alpha`.

Keys are renamed by diffusers' own converter (via `adapters.formats.lora_keys.to_peft_keys`). The alphas
are sent through the very same renaming: a shadow state dict holds each module's alpha where its down
weight was, so no kohya-name-to-module mapping is written here. A missing alpha means alpha = rank
(kohya's default, scale 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from adapters.errors import AdapterError, listing
from adapters.formats.lora_keys import group_layers, to_peft_keys
from adapters.types import LoRAAdapter, LoRALayer

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


def is_kohya(keys: list[str]) -> bool:
    """The same test `lora_state_dict` uses to pick its kohya converter."""
    return bool(keys) and all(k.startswith(KOHYA_PREFIXES) for k in keys)


def read_kohya_lora(tensors: Mapping[str, torch.Tensor]) -> LoRAAdapter:
    if dora := [k for k in tensors if k.endswith(".dora_scale")]:
        raise AdapterError(f"DoRA adapters are not supported ({dora[0]}, ...); export a plain LoRA")
    weights = {k: v for k, v in tensors.items() if not k.endswith(".alpha")}
    shadow = {}
    for key, tensor in weights.items():
        name = key.split(".", 1)[0]
        if key.endswith(".lora_down.weight"):
            alpha = tensors.get(f"{name}.alpha")
            if alpha is not None and alpha.numel() != 1:
                raise AdapterError(f"kohya alpha {name}.alpha must be a scalar, got shape {tuple(alpha.shape)}")
            shadow[key] = torch.tensor(float(tensor.shape[0]) if alpha is None else float(alpha.reshape(())))
        else:
            shadow[key] = tensor
    orphans = sorted(
        k for k in tensors if k.endswith(".alpha") and f"{k[: -len('.alpha')]}.lora_down.weight" not in tensors
    )
    if orphans:
        raise AdapterError(f"kohya alphas without LoRA weights: {listing(orphans)}")
    alphas = to_peft_keys(shadow)
    layers = {}
    for raw in group_layers(to_peft_keys(weights)):
        alpha = alphas[f"{raw.component}.{raw.module}.lora_A.weight"]
        layers[raw.canonical_name] = LoRALayer(raw.down, raw.up, float(alpha))
    return LoRAAdapter(layers)
