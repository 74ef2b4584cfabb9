"""Check a parsed adapter against the backbone spec and the export's limits, before it is stored or packed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from adapters.errors import AdapterError, listing
from adapters.spec import BackboneSpec
from adapters.types import Adapter, LoRAAdapter, TextualInversion, VPTAdapter

# Where an operator raises the rank cap R, named in the refusal (a tenant cannot retrain every LoRA it has). The
# service knows its backend and may name only its own setting (`ExportLimits.rank_setting`); this package
# does not import the service, so the default names both.
RANK_SETTING = (
    "DIFFPLEX_ENGINE__LORA_RANK on the PyTorch backend; `diffplex export --lora-rank N` and a new export on "
    "the exported backends"
)


@dataclass(frozen=True)
class ExportLimits:
    """What the exported graphs can hold: LoRA rank R and VPT tokens P per slot (recorded in the manifest)."""

    max_lora_rank: int  # R, the rank cap: the largest total rank a request may put on one module
    max_vpt_tokens: int  # P
    max_ti_vectors: int = 16  # vectors per textual-inversion token (each takes a prompt position)
    max_ti_tokens: int = 64  # tokens per textual-inversion file
    rank_setting: str = RANK_SETTING  # the operator setting that raises max_lora_rank, for the refusal


def validate(adapter: Adapter, spec: BackboneSpec, limits: ExportLimits) -> None:
    """Raise AdapterError saying what to change when `adapter` cannot run on this export."""
    if isinstance(adapter, LoRAAdapter):
        validate_lora(adapter, spec, limits)
    elif isinstance(adapter, TextualInversion):
        validate_textual_inversion(adapter, spec, limits)
    elif isinstance(adapter, VPTAdapter):
        validate_vpt(adapter, spec, limits)
    else:
        raise AdapterError(f"unknown adapter type {type(adapter).__name__}")


def served_model(spec: BackboneSpec) -> str:
    """The served model's family in words, for refusals of adapters made for another one."""
    if spec.has_text_encoder_2:
        return "SDXL-shaped, with two text encoders"
    return "SD-1.x/2.x-shaped, with one text encoder"


def validate_lora(adapter: LoRAAdapter, spec: BackboneSpec, limits: ExportLimits) -> None:
    if not adapter.layers:
        raise AdapterError("the LoRA holds no layers")
    te2 = [name for name in adapter.layers if name.startswith("text_encoder_2.")]
    if te2 and not spec.has_text_encoder_2:
        raise AdapterError(
            f"this LoRA has layers for SDXL's second text encoder (text_encoder_2: {len(te2)} modules); the served "
            f"model is {served_model(spec)}: use a LoRA made for it"
        )
    targets = {t.name: t for t in spec.lora_targets}
    if unsupported := sorted(set(adapter.layers) - set(targets)):
        patterns = "; ".join(f"{c}: {', '.join(p)}" for c, p in spec.target_patterns.items())
        raise AdapterError(
            f"the LoRA adapts modules this export does not cover: {listing(unsupported)}. "
            f"Retrain it on the exported targets ({patterns}) or drop those layers; where it was made for another "
            f"model family or shape (the served model is {served_model(spec)}), use a LoRA made for this one"
        )
    for name, layer in adapter.layers.items():
        target = targets[name]
        if (layer.d_in, layer.d_out) != (target.d_in, target.d_out) or layer.up.shape[1] != layer.rank:
            raise AdapterError(
                f"LoRA layer {name} is [{layer.d_out} x {layer.rank}] @ [{layer.rank} x {layer.d_in}] but the "
                f"module is {target.d_in} -> {target.d_out}: the LoRA was trained for another backbone (another "
                f"model family or shape; the served model is {served_model(spec)}): use a LoRA made for it"
            )
        if not 1 <= layer.rank <= limits.max_lora_rank:
            raise AdapterError(
                f"LoRA layer {name} has rank {layer.rank}; this export allows 1 to {limits.max_lora_rank}: "
                f"retrain or resize the LoRA to a lower rank, or ask the operator to raise the cap "
                f"({limits.rank_setting})"
            )
        if not (math.isfinite(layer.alpha) and layer.alpha > 0):
            raise AdapterError(f"LoRA layer {name} has alpha {layer.alpha}; it must be a positive number")
        _finite(f"LoRA layer {name}", layer.down, layer.up)


def validate_textual_inversion(adapter: TextualInversion, spec: BackboneSpec, limits: ExportLimits) -> None:
    if not 1 <= len(adapter.tokens) <= limits.max_ti_tokens:
        raise AdapterError(f"an embedding file holds 1 to {limits.max_ti_tokens} tokens, not {len(adapter.tokens)}")
    _check_ti_family(adapter, spec)
    max_vectors = min(limits.max_ti_vectors, spec.max_length - 2)  # BOS and EOS take two positions
    for token, vectors in adapter.tokens.items():
        if vectors.ndim != 2 or vectors.shape[1] != spec.token_embedding_dim:
            raise AdapterError(
                f"embedding {token!r} has shape {tuple(vectors.shape)}; this backbone's text encoder needs "
                f"[n, {spec.token_embedding_dim}]: the embedding was trained for another model"
            )
        if not 1 <= vectors.shape[0] <= max_vectors:
            raise AdapterError(f"embedding {token!r} has {vectors.shape[0]} vectors; the limit is {max_vectors}")
        _finite(f"embedding {token!r}", vectors)
        if adapter.tokens_2 is not None:
            _check_second_table(token, vectors, adapter.tokens_2, spec)


def _check_ti_family(adapter: TextualInversion, spec: BackboneSpec) -> None:
    """One table for one text encoder, two (clip_l, clip_g) for SDXL's two: the other way round is another model's."""
    if adapter.tokens_2 is not None and not spec.has_text_encoder_2:
        raise AdapterError(
            "this embedding is for SDXL (clip_l and clip_g vectors); the served model has one text encoder of "
            f"width {spec.token_embedding_dim}: use an embedding made for it"
        )
    if adapter.tokens_2 is None and spec.has_text_encoder_2:
        widths = sorted({int(v.shape[-1]) if v.ndim else 0 for v in adapter.tokens.values()})
        raise AdapterError(
            f"this embedding has one table (vectors of width {', '.join(map(str, widths))}: an SD-1.x/2.x "
            "embedding); the served model is SDXL-shaped, with two text encoders: an SDXL embedding carries "
            f"clip_l [n, {spec.token_embedding_dim}] and clip_g [n, {spec.token_embedding_dim_2}] vectors"
        )
    if adapter.tokens_2 is not None and set(adapter.tokens_2) != set(adapter.tokens):
        raise AdapterError("an SDXL embedding has clip_l and clip_g vectors for the same tokens: the file is corrupt")


def _check_second_table(
    token: str, vectors: torch.Tensor, tokens_2: Mapping[str, torch.Tensor], spec: BackboneSpec
) -> None:
    """The token's clip_g vectors: the second encoder's width, one for each of its clip_l vectors."""
    second = tokens_2[token]
    if tuple(second.shape) != (vectors.shape[0], spec.token_embedding_dim_2):
        raise AdapterError(
            f"embedding {token!r} has clip_l {tuple(vectors.shape)} and clip_g {tuple(second.shape)}; this "
            f"backbone needs clip_l [n, {spec.token_embedding_dim}] and clip_g [n, {spec.token_embedding_dim_2}] "
            "with the same n: the embedding was trained for another model"
        )
    _finite(f"embedding {token!r} (clip_g)", second)


def validate_vpt(adapter: VPTAdapter, spec: BackboneSpec, limits: ExportLimits) -> None:
    if not spec.vpt_blocks:
        raise AdapterError("this backbone's U-Net blocks cannot take VPT prompt tokens")
    if adapter.backbone_fingerprint != spec.fingerprint:
        raise AdapterError(
            f"the VPT was trained on backbone {adapter.backbone_fingerprint[:12]}, this server runs "
            f"{spec.fingerprint[:12]}: prompt tokens do not transfer between backbones, retrain it"
        )
    expected_blocks = 1 if adapter.depth == "shallow" else len(spec.vpt_blocks)
    if len(adapter.tokens) != expected_blocks:
        raise AdapterError(
            f"a {adapter.depth} VPT needs tokens for {expected_blocks} block(s); it has {len(adapter.tokens)}"
        )
    if not 1 <= adapter.num_tokens <= limits.max_vpt_tokens:
        raise AdapterError(f"the VPT has {adapter.num_tokens} tokens; this export allows 1 to {limits.max_vpt_tokens}")
    for j, (tokens, dim) in enumerate(zip(adapter.tokens, spec.vpt_dims, strict=False)):
        if tuple(tokens.shape) != (adapter.num_tokens, dim):
            raise AdapterError(
                f"VPT block {j} tokens are {tuple(tokens.shape)}; block {j} needs [{adapter.num_tokens}, {dim}]"
            )
        _finite(f"VPT block {j}", tokens)


def _finite(what: str, *tensors: torch.Tensor) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise AdapterError(f"{what} holds NaN or infinite values")
