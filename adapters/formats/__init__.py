"""Adapter file formats in: one module per format, all normalized to `adapters.types`."""

from adapters.formats.caps import ReadCaps
from adapters.formats.detect import detect_kind, load_adapter, load_adapter_file
from adapters.formats.vpt import read_vpt, vpt_to_bytes, write_vpt

__all__ = ["ReadCaps", "detect_kind", "load_adapter", "load_adapter_file", "read_vpt", "vpt_to_bytes", "write_vpt"]
