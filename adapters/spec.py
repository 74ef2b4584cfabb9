"""`BackboneSpec`: what adapters may touch on a loaded backbone, and with which dims (stored in manifest.json).

Indices are part of the graph contract: `lora_a.{i}` / `lora_b.{i}` is the i-th target *of that component*
(`spec.targets("unet")[i]`, `spec.targets("text_encoder")[i]`, and on SDXL `spec.targets("text_encoder_2")[i]`),
and `vpt.{j}` is the j-th U-Net `BasicTransformerBlock` in module order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from torch import nn

from adapters.errors import AdapterError
from adapters.fingerprint import backbone_fingerprint, canonical_module_name
from adapters.targets import DEFAULT_TEXT_ENCODER_TARGETS, DEFAULT_UNET_TARGETS  # defined without torch, for --help

Component = Literal["unet", "text_encoder", "text_encoder_2"]  # the last: SDXL's second text encoder
COMPONENTS: tuple[Component, ...] = ("unet", "text_encoder", "text_encoder_2")
# Still 1 with SDXL: its keys are optional on read and absent from an SD-1.x/2.x spec, whose JSON (and the
# manifests of exports made before) stays as it was.
SPEC_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoRATarget:
    """A module a LoRA may adapt: an `nn.Linear`, or a 1x1 `nn.Conv2d` (SD-1.x `proj_in`/`proj_out`)."""

    name: str  # canonical: "unet.<path>", "text_encoder.<path>" or "text_encoder_2.<path>"
    d_in: int
    d_out: int
    conv1x1: bool = False  # applied over the channel dim of [N, C, H, W] instead of the last dim

    @property
    def component(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class VPTBlock:
    name: str  # canonical name of the U-Net BasicTransformerBlock
    dim: int  # its hidden dim d_j: prompt tokens are [P, d_j]


@dataclass(frozen=True)
class BackboneSpec:
    fingerprint: str
    token_embedding_dim: int
    max_length: int  # text encoder positions (77 for CLIP)
    lora_targets: tuple[LoRATarget, ...]
    vpt_blocks: tuple[VPTBlock, ...]  # empty when the U-Net's blocks cannot take prompt tokens
    target_patterns: Mapping[str, tuple[str, ...]]
    token_embedding_dim_2: int = 0  # SDXL's second text encoder's width; 0: one text encoder (SD-1.x/2.x)

    @property
    def has_text_encoder_2(self) -> bool:
        return self.token_embedding_dim_2 > 0

    def targets(self, component: str) -> tuple[LoRATarget, ...]:
        return self._by_component.get(component, ())

    @cached_property
    def _by_component(self) -> dict[str, tuple[LoRATarget, ...]]:
        return {c: tuple(t for t in self.lora_targets if t.component == c) for c in COMPONENTS}

    @cached_property
    def target_index(self) -> dict[str, tuple[str, int]]:
        """canonical module name -> (component, index i of `lora_a.{i}` in that component's graph)."""
        return {t.name: (c, i) for c in COMPONENTS for i, t in enumerate(self.targets(c))}

    @property
    def vpt_dims(self) -> tuple[int, ...]:
        return tuple(b.dim for b in self.vpt_blocks)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": SPEC_FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "token_embedding_dim": self.token_embedding_dim,
            "max_length": self.max_length,
            "lora_targets": [
                {"name": t.name, "d_in": t.d_in, "d_out": t.d_out, "conv1x1": t.conv1x1} for t in self.lora_targets
            ],
            "vpt_blocks": [{"name": b.name, "dim": b.dim} for b in self.vpt_blocks],
            "target_patterns": {c: list(p) for c, p in self.target_patterns.items()},
        }
        if self.has_text_encoder_2:  # only then: a one-encoder spec serializes as before SDXL
            data["token_embedding_dim_2"] = self.token_embedding_dim_2
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        if data.get("format_version") != SPEC_FORMAT_VERSION:
            raise AdapterError(
                f"backbone spec format_version {data.get('format_version')!r} is not {SPEC_FORMAT_VERSION}: "
                "re-export the backbone with this version of diffplex"
            )
        try:
            return cls(
                fingerprint=str(data["fingerprint"]),
                token_embedding_dim=int(data["token_embedding_dim"]),
                max_length=int(data["max_length"]),
                lora_targets=tuple(
                    LoRATarget(str(t["name"]), int(t["d_in"]), int(t["d_out"]), bool(t["conv1x1"]))
                    for t in data["lora_targets"]
                ),
                vpt_blocks=tuple(VPTBlock(str(b["name"]), int(b["dim"])) for b in data["vpt_blocks"]),
                target_patterns={str(c): tuple(map(str, p)) for c, p in data["target_patterns"].items()},
                token_embedding_dim_2=int(data.get("token_embedding_dim_2", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise AdapterError(f"malformed backbone spec ({type(e).__name__}: {e}): re-export the backbone") from e


def matches_suffix(name: str, patterns: Iterable[str]) -> bool:
    """True when `name` is one of `patterns` or ends with `.<pattern>` (a suffix on module boundaries)."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def _lora_targets(component: str, model: nn.Module, patterns: tuple[str, ...]) -> list[LoRATarget]:
    targets, matched, unusable = [], set(), []
    for name, module in model.named_modules():
        if not matches_suffix(name, patterns):
            continue
        matched.update(p for p in patterns if name == p or name.endswith("." + p))
        canonical = canonical_module_name(component, name)
        if isinstance(module, nn.Linear):
            targets.append(LoRATarget(canonical, module.in_features, module.out_features))
        elif isinstance(module, nn.Conv2d) and _is_pointwise(module):
            targets.append(LoRATarget(canonical, module.in_channels, module.out_channels, conv1x1=True))
        else:
            unusable.append(f"{canonical} ({type(module).__name__})")
    if unusable:
        raise AdapterError(
            "LoRA target patterns match modules that are neither nn.Linear nor a 1x1 nn.Conv2d: "
            + ", ".join(unusable)
            + "; narrow the patterns"
        )
    if missing := [p for p in patterns if p not in matched]:
        raise AdapterError(f"LoRA target patterns match no {component} module: {', '.join(missing)}")
    return targets


def _is_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1 convolution is a linear map per pixel, so a LoRA on it is a LoRA over the channel dim."""
    simple = conv.stride == (1, 1) and conv.groups == 1 and conv.dilation == (1, 1)
    return simple and conv.kernel_size == (1, 1) and conv.padding in ((0, 0), "valid")


def _vpt_blocks(unet: nn.Module) -> tuple[VPTBlock, ...]:
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [(n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    # Prompt tokens become extra keys/values of attn1, in its input space after the block's plain LayerNorm
    # (`adapters.vpt`); blocks whose norm1 needs a timestep (ada_norm*, so that space moves with t), add
    # positional embeddings or skip self-attention cannot take them.
    if not blocks or any(
        m.norm_type != "layer_norm" or m.pos_embed is not None or m.only_cross_attention for _, m in blocks
    ):
        return ()
    return tuple(VPTBlock(canonical_module_name("unet", n), int(m.norm1.normalized_shape[0])) for n, m in blocks)


def build_spec(
    unet: nn.Module,
    text_encoder: nn.Module,
    unet_targets: tuple[str, ...] = DEFAULT_UNET_TARGETS,
    text_encoder_targets: tuple[str, ...] = DEFAULT_TEXT_ENCODER_TARGETS,
    text_encoder_2: nn.Module | None = None,
) -> BackboneSpec:
    """Derive the spec from a loaded diffusers U-Net and transformers CLIP text encoder; `text_encoder_2` is SDXL's
    second one (`CLIPTextModelWithProjection`), whose LoRA targets match `text_encoder_targets` too."""
    max_length = int(text_encoder.config.max_position_embeddings)
    targets = _lora_targets("unet", unet, unet_targets) + _lora_targets(
        "text_encoder", text_encoder, text_encoder_targets
    )
    patterns = {"unet": tuple(unet_targets), "text_encoder": tuple(text_encoder_targets)}
    dim_2 = 0
    if text_encoder_2 is not None:
        # one prompt is spliced into both encoders' `inputs_embeds` (`spec.max_length` positions each)
        if (length_2 := int(text_encoder_2.config.max_position_embeddings)) != max_length:
            raise AdapterError(
                f"the text encoders take {max_length} and {length_2} positions: SDXL's two take the same number"
            )
        targets += _lora_targets("text_encoder_2", text_encoder_2, text_encoder_targets)
        patterns["text_encoder_2"] = tuple(text_encoder_targets)
        dim_2 = int(text_encoder_2.get_input_embeddings().embedding_dim)
    return BackboneSpec(
        fingerprint=backbone_fingerprint(unet, text_encoder, text_encoder_2),
        token_embedding_dim=int(text_encoder.get_input_embeddings().embedding_dim),
        max_length=max_length,
        lora_targets=tuple(targets),
        vpt_blocks=_vpt_blocks(unet),
        target_patterns=patterns,
        token_embedding_dim_2=dim_2,
    )
