"""Tenant adapters (LoRA, textual inversion, VPT): file formats, validation, math, packing into slot banks, training.

The names below are imported on first use (PEP 562), not with the package: most of them load torch, which a light
submodule (`adapters.errors`, `adapters.targets`) and `diffplex ... --help` must not pay for. `from adapters
import X` works as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# submodule -> the names the package exports from it
_EXPORTS: dict[str, tuple[str, ...]] = {
    "adapters.errors": ("AdapterError", "DiffplexError"),
    "adapters.formats": ("ReadCaps", "load_adapter", "load_adapter_file", "vpt_to_bytes", "write_vpt"),
    "adapters.install": ("BankedModel", "install_banked"),
    "adapters.packing": ("PackedBanks", "PackedRowCache", "adapter_set_key", "pack_banks"),
    "adapters.spec": ("BackboneSpec", "build_spec"),
    "adapters.text_encoder": ("encode_inputs_embeds",),
    "adapters.textual_inversion": ("build_inputs_embeds", "build_inputs_embeds_batch", "ti_table", "ti_table_2"),
    "adapters.types": ("Adapter", "AdapterSet", "LoRAAdapter", "LoRALayer", "TextualInversion", "VPTAdapter"),
    "adapters.validate": ("ExportLimits", "validate"),
}
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Adapter",
    "AdapterError",
    "DiffplexError",
    "AdapterSet",
    "BackboneSpec",
    "BankedModel",
    "ExportLimits",
    "LoRAAdapter",
    "LoRALayer",
    "PackedBanks",
    "PackedRowCache",
    "ReadCaps",
    "TextualInversion",
    "VPTAdapter",
    "adapter_set_key",
    "build_inputs_embeds",
    "build_inputs_embeds_batch",
    "build_spec",
    "encode_inputs_embeds",
    "install_banked",
    "load_adapter",
    "load_adapter_file",
    "pack_banks",
    "ti_table",
    "ti_table_2",
    "validate",
    "vpt_to_bytes",
    "write_vpt",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCE:
        raise AttributeError(f"module 'adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCE[name]), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`validate` names both a submodule and the function the package exports. The import system binds a
    submodule on its package when it first loads it; the function keeps the name, as it did when this file
    imported everything eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "validate" and isinstance(value, types.ModuleType):
            value = value.validate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
