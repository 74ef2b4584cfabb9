"""The exported graphs as PyTorch modules: what `torch.onnx.export` traces, and the parity reference.

Each wrapper takes plain tensors in the graph contract's order (docs: /work/shared/ARCHITECTURE.md),
installs the banked LoRA / VPT modules of `adapters` on the shared frozen backbone (no copy of a weight)
and sets the banks from its own inputs, so the traced graph reads `lora_a.{i}`, `lora_b.{i}`, `vpt.{j}`,
`vpt_mask.{j}` and `adapter_slot` as inputs: adapters differ per row at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.install import BankedModel, install_banked
from adapters.packing import ADAPTER_SLOT, lora_a_name, lora_b_name, vpt_mask_name, vpt_name
from adapters.spec import BackboneSpec
from adapters.text_encoder import encode_inputs_embeds

UNET_CFG = "unet_cfg"
UNET_PLAIN = "unet"
TEXT_ENCODER = "text_encoder"
VAE_ENCODER = "vae_encoder"
VAE_DECODER = "vae_decoder"
GRAPHS: tuple[str, ...] = (TEXT_ENCODER, UNET_CFG, UNET_PLAIN, VAE_ENCODER, VAE_DECODER)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, symbolic shape (ints are fixed, strings are dynamic axes), dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy-style name: "float32", "float16", "int64"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def bank_specs(spec: BackboneSpec, component: str, rank: int, vpt_tokens: int) -> list[TensorSpec]:
    """The bank inputs of `component`'s graph, in input order: LoRA pairs per target, then VPT per block."""
    out = []
    for i, target in enumerate(spec.targets(component)):
        out.append(TensorSpec(lora_a_name(i), ("slots", rank, target.d_in), "float32"))
        out.append(TensorSpec(lora_b_name(i), ("slots", target.d_out, rank), "float32"))
    if component == "unet" and vpt_tokens > 0:
        for j, dim in enumerate(spec.vpt_dims):
            out.append(TensorSpec(vpt_name(j), ("slots", vpt_tokens, dim), "float32"))
            out.append(TensorSpec(vpt_mask_name(j), ("slots", vpt_tokens), "float32"))
    return out


class _Banked(nn.Module):
    """Shared plumbing: the banked model and the names of the trailing bank arguments."""

    def __init__(self, model: nn.Module, banked: BankedModel, banks: list[TensorSpec]) -> None:
        super().__init__()
        self.model = model
        self.banked = banked
        self.bank_names = [b.name for b in banks]
        banked.state.graph_mode = True

    def _set_banks(self, adapter_slot: torch.Tensor, banks: tuple[torch.Tensor, ...]) -> None:
        # Set directly rather than through `activate`: the VPT banks are optional (P = 0 exports none).
        self.banked.state.banks = dict(zip(self.bank_names, banks, strict=True))
        self.banked.state.slot = adapter_slot

    def _clear(self) -> None:
        self.banked.state.banks, self.banked.state.slot = None, None


class TextEncoderGraph(_Banked):
    """`inputs_embeds` [N, L, D], `adapter_slot` [N], LoRA banks -> `last_hidden_state` [N, L, D]."""

    def forward(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, *banks: torch.Tensor) -> torch.Tensor:
        self._set_banks(adapter_slot, banks)
        try:
            return encode_inputs_embeds(self.model, inputs_embeds)
        finally:
            self._clear()


class UNetGraph(_Banked):
    """Plain U-Net: `sample`, `timestep` [N] (per row), `encoder_hidden_states`, `adapter_slot`, banks."""

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        adapter_slot: torch.Tensor,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        self._set_banks(adapter_slot, banks)
        try:
            return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        finally:
            self._clear()


class UNetCFGGraph(_Banked):
    """Fused classifier-free guidance: cond and uncond rows in ONE U-Net pass over 2N rows.

    noise_pred = uncond + guidance_scale * (cond - uncond), per row, as diffusers' pipelines compute it.
    A row's uncond half uses the same adapter slot as its cond half (the pipeline's negative prompt is
    encoded with the same adapters too).
    """

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        uncond_hidden_states: torch.Tensor,
        guidance_scale: torch.Tensor,
        adapter_slot: torch.Tensor,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        rows = sample.shape[0]
        self._set_banks(torch.cat([adapter_slot, adapter_slot]), banks)
        try:
            both = self.model(
                torch.cat([sample, sample]),
                torch.cat([timestep, timestep]),
                torch.cat([encoder_hidden_states, uncond_hidden_states]),
                return_dict=False,
            )[0]
        finally:
            self._clear()
        cond, uncond = both[:rows], both[rows:]
        return uncond + guidance_scale.to(cond.dtype).view(-1, 1, 1, 1) * (cond - uncond)


class VAEEncoderGraph(nn.Module):
    """`image` [N, 3, H, W] in [-1, 1] -> `latent_moments` [N, 2C, h, w] (mean, log-variance).

    The host draws the latent (mean + std * noise, times the scaling factor) with the request's own
    generator, as diffusers' img2img does, so the graph stays deterministic.
    """

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments = self.vae.encoder(image)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        return moments


class VAEDecoderGraph(nn.Module):
    """`latent_sample` [N, C, h, w] (scaled, as the U-Net sees it) -> `image` [N, 3, H, W] in [-1, 1]."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample / self.scaling_factor, return_dict=False)[0]


@dataclass
class GraphModules:
    """Every graph of one backbone, sharing its frozen weights."""

    text_encoder: TextEncoderGraph
    unet_cfg: UNetCFGGraph
    unet: UNetGraph
    vae_encoder: VAEEncoderGraph
    vae_decoder: VAEDecoderGraph

    def get(self, name: str) -> nn.Module:
        return getattr(self, name)


def build_graph_modules(
    unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, spec: BackboneSpec, rank: int, vpt_tokens: int
) -> GraphModules:
    """Install the banked modules once per model; the two U-Net graphs share one installation."""
    text_banked = install_banked(text_encoder, spec, "text_encoder")
    unet_banked = install_banked(unet, spec, "unet")
    text_banks = bank_specs(spec, "text_encoder", rank, vpt_tokens)
    unet_banks = bank_specs(spec, "unet", rank, vpt_tokens)
    return GraphModules(
        text_encoder=TextEncoderGraph(text_encoder, text_banked, text_banks),
        unet_cfg=UNetCFGGraph(unet, unet_banked, unet_banks),
        unet=UNetGraph(unet, unet_banked, unet_banks),
        vae_encoder=VAEEncoderGraph(vae),
        vae_decoder=VAEDecoderGraph(vae),
    )


def graph_io(
    name: str, spec: BackboneSpec, rank: int, vpt_tokens: int, latent_channels: int, text_dim: int
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of graph `name`, in argument order."""
    length = spec.max_length
    latent = TensorSpec("sample", ("rows", latent_channels, "height", "width"), "float32")
    step = TensorSpec("timestep", ("rows",), "float32")
    context = TensorSpec("encoder_hidden_states", ("rows", "context", text_dim), "float32")
    slot = TensorSpec(ADAPTER_SLOT, ("rows",), "int64")
    noise = TensorSpec("noise_pred", ("rows", latent_channels, "height", "width"), "float32")
    if name == TEXT_ENCODER:
        embeds = TensorSpec("inputs_embeds", ("rows", length, spec.token_embedding_dim), "float32")
        hidden = TensorSpec("last_hidden_state", ("rows", length, text_dim), "float32")
        return [embeds, slot, *bank_specs(spec, "text_encoder", rank, vpt_tokens)], [hidden]
    if name == UNET_CFG:
        uncond = TensorSpec("uncond_hidden_states", ("rows", "context", text_dim), "float32")
        scale = TensorSpec("guidance_scale", ("rows",), "float32")
        return [latent, step, context, uncond, scale, slot, *bank_specs(spec, "unet", rank, vpt_tokens)], [noise]
    if name == UNET_PLAIN:
        return [latent, step, context, slot, *bank_specs(spec, "unet", rank, vpt_tokens)], [noise]
    image = TensorSpec("image", ("rows", 3, "image_height", "image_width"), "float32")
    if name == VAE_ENCODER:
        moments = TensorSpec("latent_moments", ("rows", 2 * latent_channels, "height", "width"), "float32")
        return [image], [moments]
    if name == VAE_DECODER:
        return [TensorSpec("latent_sample", latent.shape, "float32")], [image]
    raise ValueError(f"unknown graph {name!r}; known: {', '.join(GRAPHS)}")
