"""PyTorch reference backend: the export's own graph modules run eagerly on the diffusers pipeline."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.spec import DEFAULT_TEXT_ENCODER_TARGETS, DEFAULT_UNET_TARGETS
from adapters.targets import DEFAULT_LORA_RANK, DEFAULT_VPT_TOKENS
from export.backbone import Backbone, load_backbone
from export.graph_names import SHALLOW_OF, TEXT_ENCODER_2
from export.graphs import TEXT_ENCODER, UNET_CFG, UNET_PLAIN
from service.runtime.base import ADDED_COND, ADDED_COND_CFG, AddedCond, Banks, DeepFeatures, Runtime
from service.runtime.info import pipeline_info


class TorchRuntime(Runtime):
    name = "pytorch"

    def __init__(
        self,
        model_dir: Path | Backbone,  # or a Backbone already built (`diffplex bench sdxl`: random weights)
        lora_rank: int = DEFAULT_LORA_RANK,  # the cap; each call's banks carry their own rank
        vpt_tokens: int = DEFAULT_VPT_TOKENS,
        device: str = "cpu",
        unet_targets: tuple[str, ...] = DEFAULT_UNET_TARGETS,
        text_encoder_targets: tuple[str, ...] = DEFAULT_TEXT_ENCODER_TARGETS,
        variant: str | None = None,
    ) -> None:
        # fp32 whatever the variant's dtype: the graphs run fp32
        backbone = model_dir if isinstance(model_dir, Backbone) else load_backbone(model_dir, variant)
        self.info = pipeline_info(backbone, lora_rank, vpt_tokens, unet_targets, text_encoder_targets)
        spec, vpt_tokens = self.info.spec, self.info.vpt_tokens
        self.device = torch.device(device)
        for module in (backbone.unet, backbone.text_encoder, backbone.vae, backbone.text_encoder_2):
            if module is not None:
                module.to(self.device)
        self.modules = backbone.graph_modules(spec, vpt_tokens)
        # Each graph's bank arguments, in its order (SDXL's first encoder takes none for its unused last layer).
        graphs = {"unet": UNET_PLAIN, "text_encoder": TEXT_ENCODER, "text_encoder_2": TEXT_ENCODER_2}
        components = ("unet", "text_encoder") + (("text_encoder_2",) if backbone.is_xl else ())
        self._bank_order = {c: self.modules.get(graphs[c]).bank_names for c in components}
        if self.step_cache:  # the shallow U-Nets take the banks of the modules their path runs
            self._bank_order["unet_shallow"] = self.modules.unet_shallow.bank_names

    def _banks(self, component: str, banks: Banks) -> list[torch.Tensor]:
        return [banks[name].to(self.device) for name in self._bank_order[component]]

    def _run(self, graph: str, component: str, banks: Banks, *args: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            tensors = [a.to(self.device) for a in args]
            return self.modules.get(graph)(*tensors, *self._banks(component, banks)).float().cpu()

    def _unet(
        self,
        graph: str,
        banks: Banks,
        args: list[torch.Tensor],
        adapter_slot: torch.Tensor,
        features: DeepFeatures | None,
        return_features: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A U-Net call: the full graph, the same returning its deep features, or its shallow path on given ones."""
        self.check_step_cache(features, return_features)
        if features is not None:
            module, args, component = self.modules.get(SHALLOW_OF[graph]), [*args, *features], "unet_shallow"
        else:
            module = self.modules.traced(graph) if return_features else self.modules.get(graph)
            component = "unet"
        with torch.inference_mode():
            tensors = [a.to(self.device) for a in (*args, adapter_slot)]
            out = module(*tensors, *self._banks(component, banks))
        if isinstance(out, tuple):
            return tuple(o.float().cpu() for o in out)
        return out.float().cpu()

    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        return self._run(TEXT_ENCODER, "text_encoder", banks, inputs_embeds, adapter_slot)

    def encode_text_2(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            tensors = [t.to(self.device) for t in (inputs_embeds, eos_index, adapter_slot)]
            hidden, pooled = self.modules.get(TEXT_ENCODER_2)(*tensors, *self._banks("text_encoder_2", banks))
            return hidden.float().cpu(), pooled.float().cpu()

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
        added: AddedCond | None = None,
        features: DeepFeatures | None = None,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        args = [sample, timestep, cond, uncond, guidance_scale, *self.added_args(added, ADDED_COND_CFG)]
        return self._unet(UNET_CFG, banks, args, adapter_slot, features, return_features)

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
        args = [sample, timestep, cond, *self.added_args(added, ADDED_COND)]
        return self._unet(UNET_PLAIN, banks, args, adapter_slot, features, return_features)

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.modules.vae_encoder(image.to(self.device)).float().cpu()

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.modules.vae_decoder(latents.to(self.device)).float().cpu()
