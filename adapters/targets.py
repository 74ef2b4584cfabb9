"""The modules LoRA banks hold by default: U-Net and text encoder module name suffixes (`adapters.spec` re-exports
them). Plain data, without torch, so `diffplex export --help` can show them as defaults."""

from __future__ import annotations

DEFAULT_UNET_TARGETS: tuple[str, ...] = (
    *(f"{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")),
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
DEFAULT_TEXT_ENCODER_TARGETS: tuple[str, ...] = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)
