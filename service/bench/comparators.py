"""What `diffplex bench engine` measures the serving engine against, built here so the engine carries no switch
for them: split CFG (a runtime) and request-level batching (a way of driving the engine)."""

from __future__ import annotations

import torch

from export.guidance import classifier_free_guidance
from service.engine import Engine, GenerationRequest, GenerationResult
from service.runtime.base import AddedCond, Banks, DeepFeatures, Runtime


class SplitCFGRuntime(Runtime):
    """The classic two-call CFG in place of the fused graph: a guided call runs its cond rows, then its uncond
    rows, as two plain U-Net calls, combined by the same `classifier_free_guidance` the fused graph traces.
    Everything else is the wrapped runtime's."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = f"{inner.name} (split CFG)"
        self.info = inner.info

    @property
    def step_cache(self) -> bool:
        return False  # the comparison is of the CFG forms: no request here asks for step caching

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
    ) -> torch.Tensor:
        self.check_step_cache(features, return_features)
        cond_added = uncond_added = None
        if added is not None:  # SDXL: each half with its own pooled embedding, the same time ids
            cond_added = {"text_embeds": added["text_embeds"], "time_ids": added["time_ids"]}
            uncond_added = {"text_embeds": added["uncond_text_embeds"], "time_ids": added["time_ids"]}
        free = adapter_free
        cond_pred = self.inner.unet(sample, timestep, cond, adapter_slot, banks, adapter_free=free, added=cond_added)
        uncond_pred = self.inner.unet(
            sample, timestep, uncond, adapter_slot, banks, adapter_free=free, added=uncond_added
        )
        return classifier_free_guidance(cond_pred, uncond_pred, guidance_scale)

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
    ) -> torch.Tensor:
        self.check_step_cache(features, return_features)
        return self.inner.unet(sample, timestep, cond, adapter_slot, banks, adapter_free=adapter_free, added=added)

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner.vae_encode(image)

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner.vae_decode(latents)


def run_request_level(engine: Engine, requests: list[GenerationRequest], batch: int) -> list[GenerationResult]:
    """Request-level (static) batching on the same engine: `batch` requests at a time, the next batch only when
    the whole previous one has finished, as a server batching whole requests does; a batch's short requests
    leave their rows idle until its longest is done. Results in `requests`' order."""
    results: list[GenerationResult] = []
    for start in range(0, len(requests), batch):
        jobs = [engine.submit(r) for r in requests[start : start + batch]]
        engine.run_until_idle()
        results += [job.result(timeout=0) for job in jobs]
    return results
