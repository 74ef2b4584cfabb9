"""LoRA files as diffusers writes them (`save_lora_weights`): peft keys under `unet.` / `text_encoder.` (and SDXL's
`text_encoder_2.`).

Alpha follows `load_lora_weights`: with the `lora_adapter_metadata` JSON that `save_lora_weights` stores
when given the adapters' `LoraConfig`, each module's rank and alpha are resolved the way peft resolves
them (`rank_pattern` / `alpha_pattern` via peft's `get_pattern_key`; `use_rslora` scales by sqrt(r));
without it diffusers loads every module with alpha = rank (scale 1), and so do we.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from adapters.errors import AdapterError
from adapters.formats.lora_keys import RawLayer, group_layers, to_peft_keys
from adapters.formats.lora_variants import refuse_variants
from adapters.types import LoRAAdapter, LoRALayer

METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
# peft matches each rank/alpha pattern key as a regex against every module, and Python's `re` has no
# timeout: one key of eight `.*` backtracks 21 s per module name. diffusers writes module paths there
# (`get_peft_kwargs`), so those are what is read, and matched without a regex (`pattern_key`).
PATTERN_KEY = re.compile(r"\^?[\w.]{1,200}")


def read_diffusers_lora(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> LoRAAdapter:
    refuse_variants(tensors)  # before diffusers' converters, which may rename or drop what they do not know
    configs = _component_configs(metadata.get(METADATA_KEY))
    layers = {}
    for raw in group_layers(to_peft_keys(tensors)):
        layers[raw.canonical_name] = LoRALayer(raw.down, raw.up, _alpha(configs.get(raw.component), raw))
    return LoRAAdapter(layers)


def _component_configs(raw: str | None) -> dict[str, dict[str, Any]]:
    """`{"unet.r": 4, "unet.lora_alpha": 8, ...}` (diffusers flattens each LoraConfig under its prefix)."""
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError as e:
        raise AdapterError(f"LoRA metadata {METADATA_KEY!r} is not valid JSON: {e}") from e
    if not isinstance(flat, dict):
        raise AdapterError(f"LoRA metadata {METADATA_KEY!r} is not a JSON object")
    configs: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        component, _, field = str(key).partition(".")
        configs.setdefault(component, {})[field] = value
    return configs


def _alpha(config: Mapping[str, Any] | None, raw: RawLayer) -> float:
    """Canonical alpha (scale = alpha / rank) for one module, as peft would configure it."""
    rank = raw.down.shape[0]
    if config is None:
        return float(rank)
    if config.get("use_dora") or config.get("lora_bias"):
        raise AdapterError(f"LoRA config on {raw.component} uses DoRA or LoRA biases, which are not supported")
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    if not isinstance(rank_pattern, dict) or not isinstance(alpha_pattern, dict):
        raise AdapterError(f"LoRA config on {raw.component}: rank_pattern / alpha_pattern must be objects")
    r = rank_pattern.get(pattern_key(rank_pattern, raw), config.get("r", rank))
    alpha = alpha_pattern.get(pattern_key(alpha_pattern, raw), config.get("lora_alpha", r))
    if not isinstance(r, int) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise AdapterError(f"LoRA config for {raw.canonical_name}: r must be an integer and lora_alpha a number")
    if r != rank:
        raise AdapterError(f"LoRA config says rank {r} for {raw.canonical_name} but its weights have rank {rank}")
    if r < 1:  # a rank-0 module would divide by zero below
        raise AdapterError(f"LoRA module {raw.canonical_name} has rank {r}: a LoRA layer needs rank 1 or more")
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return float(scale * rank)


def pattern_key(patterns: Mapping[str, Any], raw: RawLayer) -> str | None:
    """peft's `get_pattern_key` for module-path keys: the first key (in the config's order) that is the module's
    path or a suffix of it on a `.` boundary (`^path`: the whole path only); None when none is."""
    if bad := [k for k in patterns if not PATTERN_KEY.fullmatch(k)]:
        raise AdapterError(
            f"LoRA config on {raw.component}: rank/alpha pattern key {bad[0][:100]!r} is not a module path; "
            "write the modules' paths out (e.g. 'attn1.to_q'), regular expressions are not read"
        )
    parts = raw.module.split(".")
    suffixes = {".".join(parts[i:]) for i in range(len(parts))}
    return next((k for k in patterns if k.removeprefix("^") in suffixes and (k[0] != "^" or k[1:] == raw.module)), None)
