"""kohya-ss LoRA files: `lora_unet_<path>` / `lora_te_<path>` with `.lora_down.weight`, `.lora_up.weight`, `.alpha`.

SDXL's: `lora_te1_<path>` and `lora_te2_<path>` for its two text encoders, and the U-Net under diffusers' block
names or the SGM ones kohya-ss trains SDXL with (`lora_unet_input_blocks_4_1_...`), which diffusers renames.

Keys are renamed by diffusers' own converter (via `adapters.formats.lora_keys.to_peft_keys`). The alphas
are sent through the very same renaming: a shadow state dict holds each module's alpha where its down
weight was, so no kohya-name-to-module mapping is written here. A missing alpha means alpha = rank
(kohya's default, scale 1).

diffusers' converter trusts the file (a `lora_down` without its `lora_up` is a KeyError there), so the
layout is checked first, per module and in kohya's own names, which are the ones the uploader can find.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from adapters.errors import AdapterError, listing
from adapters.formats.lora_keys import as_linear, group_layers, is_locon, to_peft_keys
from adapters.formats.lora_variants import refuse_conv, refuse_variants
from adapters.types import LoRAAdapter, LoRALayer

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
# What diffusers' kohya converter reads: the module name (no dots) and one of three suffixes.
KOHYA_KEY = re.compile(r"(lora_(?:unet|te|te1|te2)_[^.]+)\.(lora_down\.weight|lora_up\.weight|alpha)")
# U-Net block names of the SGM / LDM U-Net and of diffusers' (`_maybe_map_sgm_blocks_to_diffusers`' test)
SGM_BLOCKS = ("input_blocks", "middle_block", "output_blocks")
DIFFUSERS_BLOCKS = ("down_blocks", "mid_block", "up_blocks")


def is_kohya(keys: list[str]) -> bool:
    """The same test `lora_state_dict` uses to pick its kohya converter."""
    return bool(keys) and all(k.startswith(KOHYA_PREFIXES) for k in keys)


def read_kohya_lora(tensors: Mapping[str, torch.Tensor]) -> LoRAAdapter:
    refuse_variants(tensors)  # LoHa / LoKr / DoRA: before the layout check, which would call them stray keys
    check_layout(tensors)
    weights = {k: v for k, v in tensors.items() if not k.endswith(".alpha")}
    shadow = {}
    for key, tensor in weights.items():
        name = key.split(".", 1)[0]
        if key.endswith(".lora_down.weight"):
            alpha = tensors.get(f"{name}.alpha")
            shadow[key] = torch.tensor(float(tensor.shape[0]) if alpha is None else float(alpha.reshape(())))
        else:
            shadow[key] = tensor
    alphas = to_peft_keys(shadow)
    layers = {}
    for raw in group_layers(to_peft_keys(weights)):
        alpha = alphas[f"{raw.component}.{raw.module}.lora_A.weight"]
        layers[raw.canonical_name] = LoRALayer(raw.down, raw.up, float(alpha))
    return LoRAAdapter(layers)


def _check_block_naming(names: list[str]) -> None:
    """diffusers drops every SGM-named module of a file that also has diffusers-named ones: refused whole instead,
    as a file applied in part would be another adapter than the one trained."""
    sgm = [n for n in names if any(b in n for b in SGM_BLOCKS)]
    if sgm and (other := [n for n in names if any(b in n for b in DIFFUSERS_BLOCKS) and n not in sgm]):
        raise AdapterError(
            f"kohya LoRA names U-Net blocks both the SGM way ({listing(sgm)}) and the diffusers way "
            f"({listing(other)}): one file uses one naming; convert the file to one of them"
        )


def check_layout(tensors: Mapping[str, torch.Tensor]) -> None:
    """Every module has a `lora_down` [r, in] and a `lora_up` [out, r] (or their 1x1-conv forms) of one rank,
    and at most a scalar `alpha`; nothing else."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        if match := KOHYA_KEY.fullmatch(key):
            modules.setdefault(match[1], {})[match[2].split(".")[0]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise AdapterError(
            f"unsupported LoRA layout: kohya keys are <module>.lora_down.weight, <module>.lora_up.weight and "
            f"<module>.alpha, not {listing(sorted(unknown))} (LyCORIS LoHa / LoKr files are not supported)"
        )
    if orphans := sorted(f"{n}.alpha" for n, parts in modules.items() if set(parts) == {"alpha"}):
        raise AdapterError(f"kohya alphas without LoRA weights: {listing(orphans)}")
    _check_block_naming(sorted(modules))
    # every LoCon conv layer is named at once, before any per-module error: they are one reason, not many
    refuse_conv(
        [
            f"{name} (lora_down {tuple(parts['lora_down'].shape)})"
            for name, parts in sorted(modules.items())
            if "lora_down" in parts and is_locon(parts["lora_down"])
        ]
    )
    for name, parts in sorted(modules.items()):
        if missing := {"lora_down", "lora_up"} - set(parts):
            (has,) = {"lora_down", "lora_up"} - missing
            raise AdapterError(
                f"kohya LoRA module {name} has {has}.weight but no {missing.pop()}.weight: the file is incomplete"
            )
        down, up = parts["lora_down"], parts["lora_up"]
        if as_linear(down) is None or as_linear(up) is None:
            raise AdapterError(
                f"kohya LoRA module {name}: lora_down is {tuple(down.shape)} and lora_up {tuple(up.shape)}; "
                "only linear ([r, in] and [out, r]) and 1x1-conv ([r, in, 1, 1] and [out, r, 1, 1]) LoRA layers "
                "are supported"
            )
        if down.shape[0] != up.shape[1]:
            raise AdapterError(
                f"kohya LoRA module {name}: lora_down has rank {down.shape[0]} but lora_up has rank {up.shape[1]}"
            )
        if (alpha := parts.get("alpha")) is not None and alpha.numel() != 1:
            raise AdapterError(f"kohya alpha {name}.alpha must be a scalar, got shape {tuple(alpha.shape)}")
