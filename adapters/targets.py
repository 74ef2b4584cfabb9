"""What the banks hold by default: the modules that take LoRA banks (U-Net and text encoder module name suffixes;
`adapters.spec` re-exports them), the LoRA rank cap R and the VPT prompt tokens P. Plain data, without torch, so
`diffplex export --help` and `diffplex adapters train --help` can show them as defaults."""

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

# R, the rank cap: the largest total rank one request may put on one module (`diffplex export --lora-rank`,
# `DIFFPLEX_ENGINE__LORA_RANK`). The graphs take any rank up to it per call, so a high cap costs nothing
# until a request uses it; 128 covers the ranks LoRAs are commonly published at (4 to 128).
DEFAULT_LORA_RANK = 128
DEFAULT_VPT_TOKENS = 8  # P: VPT prompt tokens per transformer block (`diffplex export --vpt-tokens`)
