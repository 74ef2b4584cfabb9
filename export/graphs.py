"""The exported graphs as PyTorch modules: what `torch.onnx.export` traces, and the parity reference.

Each wrapper takes plain tensors in the graph contract's order (docs/graph-contract.md),
installs the banked LoRA / VPT modules of `adapters` on the shared frozen backbone (no copy of a weight)
and sets the banks from its own inputs, so the traced graph reads `lora_a.{i}`, `lora_b.{i}`, `vpt.{j}`,
`vpt_mask.{j}` and `adapter_slot` as inputs: adapters differ per row at run time.

The U-Nets also have a base variant: the same contract without `adapter_slot` and banks, for calls in
which no row carries an adapter. It is the same module called without them: no banks are set, the banked
modules are the plain layers exactly, and the traced graph costs what a plain U-Net export costs (no
per-row bank gathers, no zero LoRA products, no masked VPT keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from adapters.install import BankedModel, install_banked
from adapters.packing import (
    ADAPTER_SLOT,
    RANK_AXIS,
    is_lora_bank,
    lora_a_name,
    lora_b_name,
    vpt_mask_name,
    vpt_name,
)
from adapters.spec import BackboneSpec
from adapters.text_encoder import encode_inputs_embeds, encode_penultimate, encode_penultimate_and_pooled
from export.graph_names import (
    BASE_GRAPHS,
    GRAPHS,
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    UNET_CFG,
    UNET_PLAIN,
    VAE_DECODER,
    VAE_ENCODER,
)
from export.guidance import classifier_free_guidance


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


def bank_specs(spec: BackboneSpec, component: str, rank: int | str, vpt_tokens: int) -> list[TensorSpec]:
    """The bank inputs of `component`'s graph, in input order: LoRA pairs per target, then VPT per block.

    `rank`: the rank dim of the LoRA banks, RANK_AXIS (dynamic: what an export writes) or the fixed R of an
    older export's graphs (`Manifest.rank_dim`)."""
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
        self.lora_banks = sum(1 for b in banks if is_lora_bank(b.name))
        banked.state.graph_mode = True

    @contextmanager
    def _banks_set(self, adapter_slot: torch.Tensor | None, banks: tuple[torch.Tensor, ...]) -> Iterator[None]:
        """The banks set for one call; none without `adapter_slot` (a base variant: the banked modules are the
        plain layers exactly then, and the traced graph takes no adapter inputs)."""
        if adapter_slot is None:
            yield
            return
        # Set directly rather than through `activate`: the VPT banks are optional (P = 0 exports none).
        # `bank_specs` puts the LoRA banks first, so a LoRA-only variant passes a prefix of the names.
        if len(banks) not in (len(self.bank_names), self.lora_banks):
            raise ValueError(
                f"expected {len(self.bank_names)} banks, or the {self.lora_banks} LoRA banks; got {len(banks)}"
            )
        self.banked.state.banks = dict(zip(self.bank_names, banks, strict=False))
        self.banked.state.slot = adapter_slot
        try:
            yield
        finally:
            self.banked.state.banks, self.banked.state.slot = None, None


class TextEncoderGraph(_Banked):
    """`inputs_embeds` [N, L, D], `adapter_slot` [N], LoRA banks -> `last_hidden_state` [N, L, D]: the last layer's
    normed output (SD-1.x/2.x), or with `penultimate` the layer before's, un-normed (SDXL's first encoder)."""

    def __init__(self, model: nn.Module, banked: BankedModel, banks: list[TensorSpec], penultimate: bool) -> None:
        super().__init__(model, banked, banks)
        self.penultimate = penultimate

    def forward(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, *banks: torch.Tensor) -> torch.Tensor:
        with self._banks_set(adapter_slot, banks):
            if self.penultimate:
                return encode_penultimate(self.model, inputs_embeds)
            return encode_inputs_embeds(self.model, inputs_embeds)


class TextEncoder2Graph(_Banked):
    """SDXL's second encoder: `inputs_embeds` [N, L, D2], `eos_index` [N] (each row's EOS position),
    `adapter_slot` [N], LoRA banks -> `hidden_states` [N, L, D2] (penultimate layer) and `text_embeds`
    [N, projection_dim] (the pooled, projected embedding the U-Net's added conditioning takes)."""

    def forward(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor, adapter_slot: torch.Tensor, *banks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._banks_set(adapter_slot, banks):
            return encode_penultimate_and_pooled(self.model, inputs_embeds, eos_index)


class UNetGraph(_Banked):
    """Plain U-Net: `sample`, `timestep` [N] (per row), `encoder_hidden_states`, `adapter_slot`, banks.

    Called without `adapter_slot` and banks it is the base variant (BASE_GRAPHS).
    """

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        adapter_slot: torch.Tensor | None = None,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        with self._banks_set(adapter_slot, banks):
            return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class UNetCFGGraph(_Banked):
    """Fused classifier-free guidance: cond and uncond rows in ONE U-Net pass over 2N rows.

    The two halves are combined per row by `classifier_free_guidance` (guidance.py), as diffusers' pipelines do.
    A row's uncond half uses the same adapter slot as its cond half (the pipeline's negative prompt is
    encoded with the same adapters too). Called without `adapter_slot` and banks it is the base variant.
    """

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        uncond_hidden_states: torch.Tensor,
        guidance_scale: torch.Tensor,
        adapter_slot: torch.Tensor | None = None,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        both_slots = None if adapter_slot is None else torch.cat([adapter_slot, adapter_slot])
        with self._banks_set(both_slots, banks):
            return fused_cfg(self.model, sample, timestep, encoder_hidden_states, uncond_hidden_states, guidance_scale)


class UNetXLGraph(_Banked):
    """SDXL's plain U-Net: as `UNetGraph`, with the added conditioning per row after the context: `text_embeds`
    [N, projection_dim] (the pooled prompt embedding) and `time_ids` [N, 6] (original size, crop top-left, target
    size)."""

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        text_embeds: torch.Tensor,
        time_ids: torch.Tensor,
        adapter_slot: torch.Tensor | None = None,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
        with self._banks_set(adapter_slot, banks):
            return self.model(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class UNetCFGXLGraph(_Banked):
    """SDXL's fused classifier-free guidance: as `UNetCFGGraph`, with `text_embeds` and `uncond_text_embeds`
    [N, projection_dim] (the pooled prompt and negative embeddings) and `time_ids` [N, 6] after `guidance_scale`.
    One set of time ids serves both halves: diffusers' negative time ids default to the prompt's."""

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        uncond_hidden_states: torch.Tensor,
        guidance_scale: torch.Tensor,
        text_embeds: torch.Tensor,
        uncond_text_embeds: torch.Tensor,
        time_ids: torch.Tensor,
        adapter_slot: torch.Tensor | None = None,
        *banks: torch.Tensor,
    ) -> torch.Tensor:
        both_slots = None if adapter_slot is None else torch.cat([adapter_slot, adapter_slot])
        pooled = torch.cat([text_embeds, uncond_text_embeds])
        added = {"text_embeds": pooled, "time_ids": torch.cat([time_ids, time_ids])}
        with self._banks_set(both_slots, banks):
            return fused_cfg(
                self.model, sample, timestep, encoder_hidden_states, uncond_hidden_states, guidance_scale, added
            )


def fused_cfg(
    unet: nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: torch.Tensor,
    added: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One U-Net pass over [cond rows; uncond rows], then classifier-free guidance per row (guidance.py).
    `added`: SDXL's added conditioning, already stacked [cond rows; uncond rows]."""
    rows = sample.shape[0]
    extra = {} if added is None else {"added_cond_kwargs": added}
    both = unet(
        torch.cat([sample, sample]),
        torch.cat([timestep, timestep]),
        torch.cat([cond, uncond]),
        return_dict=False,
        **extra,
    )[0]
    return classifier_free_guidance(both[:rows], both[rows:], guidance_scale)


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
    """Every graph of one backbone, sharing its frozen weights (SDXL: the U-Nets take the added conditioning and
    `text_encoder_2` is set)."""

    text_encoder: TextEncoderGraph
    unet_cfg: UNetCFGGraph | UNetCFGXLGraph
    unet: UNetGraph | UNetXLGraph
    vae_encoder: VAEEncoderGraph
    vae_decoder: VAEDecoderGraph
    text_encoder_2: TextEncoder2Graph | None = None

    def get(self, name: str) -> nn.Module:
        module = getattr(self, name)
        if module is None:
            raise ValueError(f"this backbone has no {name} graph")
        return module


def build_graph_modules(
    unet: nn.Module,
    text_encoder: nn.Module,
    vae: nn.Module,
    spec: BackboneSpec,
    vpt_tokens: int,
    text_encoder_2: nn.Module | None = None,
) -> GraphModules:
    """Install the banked modules once per model; the two U-Net graphs share one installation. The modules take
    banks of any rank (the batched matmuls follow the banks' shapes). With `text_encoder_2` (SDXL) the first
    encoder's graph returns its penultimate layer and the U-Nets take SDXL's added conditioning."""
    xl = text_encoder_2 is not None
    text_banked = install_banked(text_encoder, spec, "text_encoder")
    unet_banked = install_banked(unet, spec, "unet")
    text_banks = bank_specs(spec, "text_encoder", RANK_AXIS, vpt_tokens)
    if xl:  # the penultimate layer's output: the last layer never runs, nor do its banks (`last_layer_banks`)
        unused = last_layer_banks(spec, "text_encoder")
        text_banks = [b for b in text_banks if b.name not in unused]
    unet_banks = bank_specs(spec, "unet", RANK_AXIS, vpt_tokens)
    text_2 = None
    if text_encoder_2 is not None:
        text_2_banked = install_banked(text_encoder_2, spec, "text_encoder_2")
        text_2 = TextEncoder2Graph(text_encoder_2, text_2_banked, bank_specs(spec, "text_encoder_2", RANK_AXIS, 0))
    return GraphModules(
        text_encoder=TextEncoderGraph(text_encoder, text_banked, text_banks, penultimate=xl),
        unet_cfg=(UNetCFGXLGraph if xl else UNetCFGGraph)(unet, unet_banked, unet_banks),
        unet=(UNetXLGraph if xl else UNetGraph)(unet, unet_banked, unet_banks),
        vae_encoder=VAEEncoderGraph(vae),
        vae_decoder=VAEDecoderGraph(vae),
        text_encoder_2=text_2,
    )


def last_layer_banks(spec: BackboneSpec, component: str) -> set[str]:
    """The LoRA bank names of a text encoder's last layer (`encoder.layers.{last}.`): SDXL's first encoder
    conditions on the layer before, so a LoRA there changes nothing, as in diffusers, and the traced graph has no
    such inputs (the runtime feeds a graph the inputs it has)."""
    targets = spec.targets(component)
    layer = [int(t.name.split(".layers.", 1)[1].split(".", 1)[0]) for t in targets if ".layers." in t.name]
    last = f".layers.{max(layer)}." if layer else None
    names = set()
    for i, target in enumerate(targets):
        if last is not None and last in target.name:
            names |= {lora_a_name(i), lora_b_name(i)}
    return names


@dataclass(frozen=True)
class XLDims:
    """What SDXL's graphs add to the contract's dims: the second encoder's width and the pooled embedding's."""

    text_dim_2: int
    pooled_dim: int

    def to_dict(self) -> dict:
        return {"text_dim_2": self.text_dim_2, "pooled_dim": self.pooled_dim}


TIME_IDS = 6  # SDXL's added time ids per row: original (h, w), crop (top, left), target (h, w)


def graph_io(
    name: str,
    spec: BackboneSpec,
    rank: int | str,
    vpt_tokens: int,
    latent_channels: int,
    text_dim: int,
    base: bool = False,
    xl: XLDims | None = None,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of graph `name` (with `base`: of its adapter-free variant), in argument order; `rank` as
    in `bank_specs`. `text_dim` is the U-Net's context width; `xl`: an SDXL backbone's (the U-Nets take the added
    conditioning, and `text_encoder_2` exists)."""
    length = spec.max_length
    latent = TensorSpec("sample", ("rows", latent_channels, "height", "width"), "float32")
    step = TensorSpec("timestep", ("rows",), "float32")
    context = TensorSpec("encoder_hidden_states", ("rows", "context", text_dim), "float32")
    slot = TensorSpec(ADAPTER_SLOT, ("rows",), "int64")
    noise = TensorSpec("noise_pred", ("rows", latent_channels, "height", "width"), "float32")
    if name == TEXT_ENCODER:
        embeds = TensorSpec("inputs_embeds", ("rows", length, spec.token_embedding_dim), "float32")
        width = text_dim - (xl.text_dim_2 if xl is not None else 0)  # SDXL's context is both encoders' side by side
        hidden = TensorSpec("last_hidden_state", ("rows", length, width), "float32")
        banks = bank_specs(spec, "text_encoder", rank, vpt_tokens)
        if xl is not None:  # SDXL reads the penultimate layer: the last one's banks are not graph inputs
            unused = last_layer_banks(spec, "text_encoder")
            banks = [b for b in banks if b.name not in unused]
        return [embeds, slot, *banks], [hidden]
    if name == TEXT_ENCODER_2:
        if xl is None:
            raise ValueError(f"{TEXT_ENCODER_2} is an SDXL graph; this backbone has one text encoder")
        embeds = TensorSpec("inputs_embeds", ("rows", length, spec.token_embedding_dim_2), "float32")
        eos = TensorSpec("eos_index", ("rows",), "int64")
        hidden = TensorSpec("hidden_states", ("rows", length, xl.text_dim_2), "float32")
        pooled = TensorSpec("text_embeds", ("rows", xl.pooled_dim), "float32")
        return [embeds, eos, slot, *bank_specs(spec, "text_encoder_2", rank, 0)], [hidden, pooled]
    adapters = [] if base else [slot, *bank_specs(spec, "unet", rank, vpt_tokens)]
    added: list[TensorSpec] = []
    if xl is not None:
        added = [TensorSpec("text_embeds", ("rows", xl.pooled_dim), "float32")]
        if name == UNET_CFG:
            added.append(TensorSpec("uncond_text_embeds", ("rows", xl.pooled_dim), "float32"))
        added.append(TensorSpec("time_ids", ("rows", TIME_IDS), "float32"))
    if name == UNET_CFG:
        uncond = TensorSpec("uncond_hidden_states", ("rows", "context", text_dim), "float32")
        scale = TensorSpec("guidance_scale", ("rows",), "float32")
        return [latent, step, context, uncond, scale, *added, *adapters], [noise]
    if name == UNET_PLAIN:
        return [latent, step, context, *added, *adapters], [noise]
    if base:
        raise ValueError(f"{name} has no base variant; graphs with one: {', '.join(BASE_GRAPHS)}")
    image = TensorSpec("image", ("rows", 3, "image_height", "image_width"), "float32")
    if name == VAE_ENCODER:
        moments = TensorSpec("latent_moments", ("rows", 2 * latent_channels, "height", "width"), "float32")
        return [image], [moments]
    if name == VAE_DECODER:
        return [TensorSpec("latent_sample", latent.shape, "float32")], [image]
    raise ValueError(f"unknown graph {name!r}; known: {', '.join(GRAPHS)}, {TEXT_ENCODER_2}")
