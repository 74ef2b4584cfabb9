"""Tenant adapters (LoRA, textual inversion, VPT): file formats, validation, math, packing into slot banks, training."""

from adapters.errors import AdapterError, DiffplexError
from adapters.formats import ReadCaps, load_adapter, load_adapter_file, vpt_to_bytes, write_vpt
from adapters.install import BankedModel, install_banked
from adapters.packing import PackedBanks, PackedRowCache, adapter_set_key, pack_banks
from adapters.spec import BackboneSpec, build_spec
from adapters.text_encoder import encode_inputs_embeds
from adapters.textual_inversion import build_inputs_embeds, build_inputs_embeds_batch, ti_table
from adapters.types import Adapter, AdapterSet, LoRAAdapter, LoRALayer, TextualInversion, VPTAdapter
from adapters.validate import ExportLimits, validate

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
    "validate",
    "vpt_to_bytes",
    "write_vpt",
]
