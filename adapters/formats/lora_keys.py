"""LoRA state-dict keys -> one (down, up) pair per canonical module, through diffusers' own key converters.

Every LoRA layout diffusers can load (peft `lora_A`/`lora_B`, diffusers' older `to_q_lora.down` and
`lora_linear_layer`, kohya-ss `lora_unet_*`/`lora_te_*`, SDXL's `lora_te1_*`/`lora_te2_*`) goes through the
same steps `load_lora_weights` takes: `lora_state_dict` (kohya -> diffusers), then per component
`convert_unet_state_dict_to_peft` or `convert_state_dict_to_diffusers` + `convert_state_dict_to_peft`. What
comes out is keyed like peft: `<component>.<module path>.lora_A.weight`, the component one of `unet`,
`text_encoder` and SDXL's `text_encoder_2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from adapters.errors import AdapterError, listing
from adapters.fingerprint import canonical_module_name
from adapters.formats.lora_variants import refuse_conv, refuse_variants

PEFT_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up"}
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")  # `adapters.spec.COMPONENTS`, without importing the spec
# kohya-ss trains SDXL on its own (SGM / LDM-named) U-Net: `lora_unet_input_blocks_4_1_...`. diffusers renames
# those blocks from the U-Net's layers per block, which is 2 in every SD-1.x, SD-2.x and SDXL U-Net (a file is
# read before it meets the backbone; a U-Net of another shape refuses the names at validation).
SGM_UNET_CONFIG = SimpleNamespace(layers_per_block=2)


@dataclass(frozen=True)
class RawLayer:
    component: str
    module: str  # path inside the component, as peft names it (used to match alpha/rank patterns)
    down: torch.Tensor  # [r, d_in]
    up: torch.Tensor  # [d_out, r]

    @property
    def canonical_name(self) -> str:
        return canonical_module_name(self.component, self.module)


def to_peft_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename any diffusers-loadable SD-1.x/2.x or SDXL LoRA state dict to `<component>.<module>.lora_{A,B}.weight`."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    # diffusers' converters raise ValueError on keys they cannot place (and KeyError / IndexError where they
    # trust a file they should not): either way the file's layout is what is wrong
    try:
        converted, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(state_dict), unet_config=SGM_UNET_CONFIG)
    except (ValueError, KeyError, IndexError) as e:
        raise AdapterError(f"unsupported LoRA layout: {type(e).__name__} {e}") from e
    out: dict[str, torch.Tensor] = {}
    for component in COMPONENTS:
        part = {k.removeprefix(f"{component}."): v for k, v in converted.items() if k.startswith(f"{component}.")}
        if not part:
            continue
        try:
            # the same steps (first-key test included) as `load_lora_adapter` / `_load_lora_into_text_encoder`
            if component == "unet" and "lora_A" not in next(iter(part)):
                part = convert_unet_state_dict_to_peft(part)
            elif component != "unet":  # both text encoders: `_load_lora_into_text_encoder`
                part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        except (ValueError, KeyError, IndexError) as e:
            raise AdapterError(
                f"unsupported LoRA layout of the {component} keys ({listing(sorted(part))}): {type(e).__name__} {e}"
            ) from e
        out |= {f"{component}.{k}": v for k, v in part.items()}
    if leftover := sorted(k for k in converted if not k.startswith(tuple(f"{c}." for c in COMPONENTS))):
        raise AdapterError(
            "LoRA keys for components other than the U-Net and the text encoders (unet., text_encoder., "
            f"text_encoder_2.): {listing(leftover)}; a LoRA for another kind of model (Flux, SD3, ...) cannot apply"
        )
    return out


def group_layers(peft_state_dict: Mapping[str, torch.Tensor]) -> list[RawLayer]:
    """Pair `lora_A`/`lora_B` per module; 1x1-conv LoRA weights are flattened to linear ones."""
    refuse_variants(peft_state_dict)  # the readers refuse these first; here too, for any other caller
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in peft_state_dict.items():
        suffix = next((s for s in PEFT_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            unknown.append(key)
            continue
        parts.setdefault(key.removesuffix(suffix), {})[PEFT_SUFFIXES[suffix]] = tensor
    if unknown:
        raise AdapterError(f"unrecognized LoRA keys (LoRA biases, LyCORIS?): {listing(unknown)}")
    layers, not_linear, locon = [], [], []
    for path, pair in sorted(parts.items()):
        if set(pair) != {"down", "up"}:
            raise AdapterError(
                f"LoRA module {path} has only lora_{'A' if 'down' in pair else 'B'}: the file is incomplete"
            )
        down, up = as_linear(pair["down"]), as_linear(pair["up"])
        if is_locon(pair["down"]):
            locon.append(f"{path} (lora_A {tuple(pair['down'].shape)})")
            continue
        if down is None or up is None:
            not_linear.append(f"{path} (A {tuple(pair['down'].shape)}, B {tuple(pair['up'].shape)})")
            continue
        if down.shape[0] != up.shape[1]:
            raise AdapterError(f"LoRA module {path}: down has rank {down.shape[0]} but up has rank {up.shape[1]}")
        component, module = path.split(".", 1)
        layers.append(RawLayer(component, module, down, up))
    refuse_conv(locon)
    if not_linear:
        raise AdapterError(f"only linear and 1x1-conv LoRA layers are supported, not: {listing(not_linear)}")
    return layers


def is_locon(down: torch.Tensor) -> bool:
    """A conv LoRA with a kernel larger than 1x1 (LoCon: `down` [r, in, k, k], `up` [out, r, 1, 1]); the
    kernel is the down weight's, whatever `up` is."""
    return down.ndim == 4 and tuple(down.shape[2:]) != (1, 1)


def as_linear(weight: torch.Tensor) -> torch.Tensor | None:
    """[a, b] as it is, [a, b, 1, 1] (a 1x1 convolution) as [a, b]; None for any other shape."""
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        return weight[:, :, 0, 0]
    return weight if weight.ndim == 2 else None
