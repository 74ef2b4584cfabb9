"""PyTorch reference backend: the export's own graph modules run eagerly on the diffusers pipeline."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.lora import DEFAULT_LORA_RANK
from adapters.packing import RANK_AXIS
from adapters.spec import DEFAULT_TEXT_ENCODER_TARGETS, DEFAULT_UNET_TARGETS
from export.backbone import load_backbone
from export.graphs import TEXT_ENCODER, UNET_CFG, UNET_PLAIN, bank_specs, build_graph_modules
from service.runtime.base import Banks, Runtime
from service.runtime.info import pipeline_info


class TorchRuntime(Runtime):
    name = "pytorch"

    def __init__(
        self,
        model_dir: Path,
        lora_rank: int = DEFAULT_LORA_RANK,  # the cap; each call's banks carry their own rank
        vpt_tokens: int = 8,
        device: str = "cpu",
        unet_targets: tuple[str, ...] = DEFAULT_UNET_TARGETS,
        text_encoder_targets: tuple[str, ...] = DEFAULT_TEXT_ENCODER_TARGETS,
        variant: str | None = None,
    ) -> None:
        backbone = load_backbone(model_dir, variant)  # fp32 whatever the variant's dtype: the graphs run fp32
        self.info = pipeline_info(backbone, lora_rank, vpt_tokens, unet_targets, text_encoder_targets)
        spec, vpt_tokens = self.info.spec, self.info.vpt_tokens
        self.device = torch.device(device)
        for module in (backbone.unet, backbone.text_encoder, backbone.vae):
            module.to(self.device)
        self.modules = build_graph_modules(backbone.unet, backbone.text_encoder, backbone.vae, spec, vpt_tokens)
        self._bank_order = {
            component: [b.name for b in bank_specs(spec, component, RANK_AXIS, vpt_tokens)]
            for component in ("unet", "text_encoder")
        }

    def _banks(self, component: str, banks: Banks) -> list[torch.Tensor]:
        return [banks[name].to(self.device) for name in self._bank_order[component]]

    def _run(self, graph: str, component: str, banks: Banks, *args: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            tensors = [a.to(self.device) for a in args]
            return self.modules.get(graph)(*tensors, *self._banks(component, banks)).float().cpu()

    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        return self._run(TEXT_ENCODER, "text_encoder", banks, inputs_embeds, adapter_slot)

    # The reference runs every call through the banked modules: `adapter_free` is only a permission to skip them.
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
        return self._run(UNET_CFG, "unet", banks, sample, timestep, cond, uncond, guidance_scale, adapter_slot)

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
        return self._run(UNET_PLAIN, "unet", banks, sample, timestep, cond, adapter_slot)

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.modules.vae_encoder(image.to(self.device)).float().cpu()

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.modules.vae_decoder(latents.to(self.device)).float().cpu()
