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

    @abstractmethod
    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        """[N, L, D] token embeddings -> [N, L, D'] last hidden state (text-encoder LoRA banks)."""

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
    ) -> torch.Tensor:
        """Guided noise for N rows from one pass over 2N rows.

        `adapter_free`: the caller vouches that every row is in slot 0 and slot 0's banks are zero (as
        `pack_banks` makes them), so the output is the base model's: a backend may then run its adapter-free
        graph, which skips the banks' cost. False is always correct.
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
    ) -> torch.Tensor:
        """Unguided model output for N rows (`adapter_free` as in `unet_cfg`)."""

    @abstractmethod
    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> latent moments [N, 2C, h, w] (mean, log-variance)."""

    @abstractmethod
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, h, w] -> images [N, 3, H, W] in [-1, 1]."""
