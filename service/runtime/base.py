"""The runtime interface the engine drives: five graph calls on torch CPU tensors, plus what the host needs.

Every backend takes and returns the same tensors (fp32 on the CPU at this boundary; backends move them
to their device), so the engine, and its tests, do not know which one runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.spec import BackboneSpec

Banks = Mapping[str, torch.Tensor]
# SDXL's added conditioning of a U-Net call, per row: `text_embeds` [N, pooled] and `time_ids` [N, 6], and for a
# fused-CFG call `uncond_text_embeds` too (graphs.py `UNetCFGXLGraph`).
AddedCond = Mapping[str, torch.Tensor]
ADDED_COND = ("text_embeds", "time_ids")
ADDED_COND_CFG = ("text_embeds", "uncond_text_embeds", "time_ids")
# Step caching (export/step_cache.py): a call's deep features, one tensor [N, F, h, w] per side, cond then uncond
# for a fused-CFG call. Given to a U-Net call, it runs the shallow path on them; `return_features` asks a full call
# for its own.
DeepFeatures = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class XLInfo:
    """SDXL's second text side as the host sees it: its tokenizer and token table (prompts are spliced with
    embeddings' `clip_g` vectors there), the pooled embedding's width, and what a request without a negative
    prompt gets (`force_zeros_for_empty_prompt`: zero negative embeddings, as diffusers' pipeline does)."""

    tokenizer_dir: Path
    token_embedding: torch.Tensor  # [vocab, D2], shared and never mutated
    pooled_dim: int
    force_zeros_for_empty_prompt: bool


@dataclass(frozen=True)
class BackboneInfo:
    """The frozen backbone as the host sees it (from the pipeline directory or an export's manifest)."""

    spec: BackboneSpec
    lora_rank: int  # R, the rank cap: the largest total rank one request may put on one module
    vpt_tokens: int  # P of the banks (0: no VPT)
    latent_channels: int
    latent_size: int
    latent_multiple: int
    vae_scale_factor: int
    scaling_factor: float
    scheduler_config: dict
    tokenizer_dir: Path
    token_embedding: torch.Tensor  # [vocab, D], shared and never mutated
    # An export made before the banks' rank axis was dynamic: its graphs take banks of exactly `lora_rank`, so
    # every call is packed at it (`pack_banks(fixed_rank=True)`) instead of at its own rank bucket.
    lora_rank_fixed: bool = False
    xl: XLInfo | None = None  # SDXL's second text encoder and added conditioning; None for SD-1.x/2.x
    # Step caching (export/step_cache.py): the deep feature's channels where the backend runs the shallow U-Nets;
    # 0 where it cannot (an export made before them, a U-Net without an outer skip branch, TensorRT).
    step_cache_channels: int = 0

    @property
    def image_size(self) -> int:
        return self.latent_size * self.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must divide by this: pixels per latent pixel, times what the U-Net's downsampling needs."""
        return self.vae_scale_factor * self.latent_multiple


class Runtime(ABC):
    name: str
    info: BackboneInfo

    @property
    def step_cache(self) -> bool:
        """Whether the U-Net calls take `features` / `return_features` (step caching): the backend has the shallow
        graphs. A request with `cache_interval` > 1 is refused where it has not."""
        return self.info.step_cache_channels > 0

    def added_args(self, added: AddedCond | None, names: tuple[str, ...]) -> list[torch.Tensor]:
        """The added-conditioning tensors in graph order: all of `names` for an SDXL backbone, none otherwise."""
        if (added is not None) != (self.info.xl is not None):
            model = "an SDXL" if self.info.xl is not None else "an SD-1.x/2.x"
            raise ValueError(f"{model} U-Net call {'needs' if self.info.xl else 'takes no'} added conditioning")
        return [] if added is None else [added[name] for name in names]

    @abstractmethod
    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        """[N, L, D] token embeddings -> [N, L, D'] hidden states (text-encoder LoRA banks): the last layer's,
        normed; for SDXL the penultimate layer's."""

    def encode_text_2(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL's second encoder: [N, L, D2] token embeddings and each row's EOS position [N] -> penultimate
        hidden states [N, L, D2] and the pooled embedding [N, pooled] (its own LoRA banks)."""
        raise NotImplementedError(f"the {self.name} backend does not run SDXL's second text encoder")

    @abstractmethod
    def unet_cfg(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: torch.Tensor,
        adapter_slot: torch.Tensor,
        banks: Banks,
        *,
        adapter_free: bool = False,
        added: AddedCond | None = None,
        features: DeepFeatures | None = None,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Guided noise for N rows from one pass over 2N rows.

        `adapter_free`: the caller vouches that every row is in slot 0 and slot 0's banks are zero (as
        `pack_banks` makes them), so the output is the base model's: a backend may then run its adapter-free
        graph, which skips the banks' cost. False is always correct. `added`: SDXL's added conditioning
        (`ADDED_COND_CFG`), required for an SDXL backbone and refused otherwise.
        Step caching (where `step_cache`): with `features` (cond, uncond) the call runs the shallow path on them;
        with `return_features` a full call returns (noise, cond feature, uncond feature).
        """

    @abstractmethod
    def unet(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        cond: torch.Tensor,
        adapter_slot: torch.Tensor,
        banks: Banks,
        *,
        adapter_free: bool = False,
        added: AddedCond | None = None,
        features: DeepFeatures | None = None,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Unguided model output for N rows (`adapter_free` as in `unet_cfg`; `added`: `ADDED_COND` for SDXL;
        `features` (one) and `return_features` -> (noise, feature) as in `unet_cfg`)."""

    def check_step_cache(self, features: DeepFeatures | None, return_features: bool) -> None:
        if (features is not None or return_features) and not self.step_cache:
            raise ValueError(f"the {self.name} backend has no step-caching graphs")
        if features is not None and return_features:
            raise ValueError("a shallow call reuses deep features; it computes none to return")

    @abstractmethod
    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> latent moments [N, 2C, h, w] (mean, log-variance)."""

    @abstractmethod
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, h, w] -> images [N, 3, H, W] in [-1, 1]."""
