"""A Runtime that counts U-Net rows per call for the metrics, delegating every call to the real backend.

Wrapping the runtime (rather than reading engine internals) measures exactly what the graphs were given:
a fused-CFG call over N requests runs 2N rows.
"""

from __future__ import annotations

import torch

from service.core.metrics import Metrics
from service.runtime.base import AddedCond, Banks, DeepFeatures, Runtime


class InstrumentedRuntime(Runtime):
    def __init__(self, inner: Runtime, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        self.info = inner.info

    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        return self.inner.encode_text(inputs_embeds, adapter_slot, banks)

    def encode_text_2(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.encode_text_2(inputs_embeds, eos_index, adapter_slot, banks)

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
        self.metrics.unet_rows.labels("cfg" if features is None else "cfg_shallow").observe(2 * sample.shape[0])
        return self.inner.unet_cfg(
            sample,
            timestep,
            cond,
            uncond,
            guidance_scale,
            adapter_slot,
            banks,
            adapter_free=adapter_free,
            added=added,
            features=features,
            return_features=return_features,
        )

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
        self.metrics.unet_rows.labels("plain" if features is None else "plain_shallow").observe(sample.shape[0])
        return self.inner.unet(
            sample,
            timestep,
            cond,
            adapter_slot,
            banks,
            adapter_free=adapter_free,
            added=added,
            features=features,
            return_features=return_features,
        )

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner.vae_encode(image)

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner.vae_decode(latents)
