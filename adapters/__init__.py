"""Tenant adapters (LoRA, textual inversion, VPT): file formats, validation, math, packing into slot banks, training."""
