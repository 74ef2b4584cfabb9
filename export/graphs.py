"""The exported graphs as PyTorch modules: what `torch.onnx.export` traces, and the parity reference.

Each wrapper takes plain tensors in the graph contract's order (docs/graph-contract.md),
installs the banked LoRA / VPT modules of `adapters` on the shared frozen backbone (no copy of a weight)
and sets the banks from its own inputs, so the traced graph reads `lora_a.{i}`, `lora_b.{i}`, `vpt.{j}`,
`vpt_mask.{j}` and `adapter_slot` as inputs: adapters differ per row at run time.

The U-Nets also have a base variant: the same contract without `adapter_slot` and banks, for calls in
which no row carries an adapter. It is the same module called without them: no banks are set, the banked
modules are the plain layers exactly, and the traced graph costs what a plain U-Net export costs (no
per-row bank gathers, no zero LoRA products, no masked VPT keys).

With step caching (export/step_cache.py) the full U-Nets also return their deep feature (`FeatureGraph`), and
each has a shallow form that takes it (`ShallowGraph`): the same wrappers, run through the U-Net's shallow path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    CFG_UNETS,
    FULL_UNETS,
    GRAPHS,
    SHALLOW_OF,
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    UNET_CFG,
    UNET_CFG_SHALLOW,
    UNET_PLAIN,
    UNET_SHALLOW,
    VAE_DECODER,
    VAE_ENCODER,
)
from export.guidance import classifier_free_guidance
from export.step_cache import (
    DEEP_FEATURE,
    UNCOND_DEEP_FEATURE,
    StepCacheDims,
    capturing_deep_feature,
    shallow_unet,
)


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


def shallow_bank_specs(spec: BackboneSpec, rank: int | str, vpt_tokens: int, cache: StepCacheDims) -> list[TensorSpec]:
    """The U-Net bank inputs a shallow graph takes: those of the modules its path runs (`runs_shallow`), in the
    full graph's order. The others would be dropped by the tracer, which keeps only the inputs a graph reads."""
    module_of = {}
    for i, target in enumerate(spec.targets("unet")):
        module_of[lora_a_name(i)] = module_of[lora_b_name(i)] = target.name
    for j, block in enumerate(spec.vpt_blocks):
        module_of[vpt_name(j)] = module_of[vpt_mask_name(j)] = block.name
    return [
        b
        for b in bank_specs(spec, "unet", rank, vpt_tokens)
        if cache.runs_shallow(module_of[b.name].removeprefix("unet."))
    ]


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

    conditioning_args = 3  # the arguments before `adapter_slot`

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

    conditioning_args = 5

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

    conditioning_args = 5

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

    conditioning_args = 8

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


UNetGraphModule = UNetGraph | UNetCFGGraph | UNetXLGraph | UNetCFGXLGraph


class FeatureGraph(nn.Module):
    """A full U-Net graph that also returns the deep feature(s) step caching keeps: `deep_feature` [N, F, h, w], and
    for the fused-CFG form `uncond_deep_feature` [N, F, h, w] of the uncond rows."""

    def __init__(self, full: UNetGraphModule, fused: bool) -> None:
        super().__init__()
        self.full = full
        self.fused = fused

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with capturing_deep_feature(self.full.model) as captured:
            noise = self.full(*args)
        (feature,) = captured
        if not self.fused:
            return noise, feature
        rows = noise.shape[0]
        return noise, feature[:rows], feature[rows:]


class ShallowGraph(nn.Module):
    """A full U-Net graph's shallow path: the full graph's conditioning arguments, then the deep feature(s) of an
    earlier full step (`deep_feature`, and `uncond_deep_feature` for the fused-CFG form), then `adapter_slot` and the
    banks of the modules the path runs (`shallow_bank_specs`), or none for the base variant."""

    def __init__(self, full: UNetGraphModule, fused: bool, bank_names: list[str], lora_banks: int) -> None:
        super().__init__()
        self.full = full
        self.features = 2 if fused else 1
        self.bank_names = bank_names
        self.lora_banks = lora_banks

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        head = self.full.conditioning_args
        conditioning, features, adapters = args[:head], args[head : head + self.features], args[head + self.features :]
        feature = torch.cat(features)  # [cond rows; uncond rows], the order `fused_cfg` stacks them in
        with shallow_unet(self.full.model, feature):
            return self.full(*conditioning, *self._full_banks(adapters))

    def _full_banks(self, adapters: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor | None, ...]:
        """`adapter_slot` and the banks in the full graph's order: None for the modules the path does not run,
        which never read them."""
        if not adapters:
            return ()
        slot, banks = adapters[0], adapters[1:]
        given = dict(zip(self.bank_names, banks, strict=False))
        if len(banks) not in (len(self.bank_names), self.lora_banks):
            raise ValueError(f"expected {len(self.bank_names)} banks, or the {self.lora_banks} LoRA banks")
        full = self.full.bank_names
        names = full if len(banks) == len(self.bank_names) else full[: self.full.lora_banks]
        return (slot, *(given.get(name) for name in names))


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
    # Step caching: the U-Nets' shallow paths, and the full U-Nets returning their deep features (FeatureGraph);
    # None where the U-Net has no outer skip branch (`StepCacheDims.of`).
    step_cache: StepCacheDims | None = None
    unet_cfg_shallow: ShallowGraph | None = None
    unet_shallow: ShallowGraph | None = None
    with_features: dict[str, FeatureGraph] = field(default_factory=dict)

    def get(self, name: str) -> nn.Module:
        module = getattr(self, name)
        if module is None:
            raise ValueError(f"this backbone has no {name} graph")
        return module

    def traced(self, name: str) -> nn.Module:
        """Graph `name` as the export traces it: the full U-Nets with their deep features where step caching is
        exported."""
        return self.with_features.get(name) or self.get(name)


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
    modules = GraphModules(
        text_encoder=TextEncoderGraph(text_encoder, text_banked, text_banks, penultimate=xl),
        unet_cfg=(UNetCFGXLGraph if xl else UNetCFGGraph)(unet, unet_banked, unet_banks),
        unet=(UNetXLGraph if xl else UNetGraph)(unet, unet_banked, unet_banks),
        vae_encoder=VAEEncoderGraph(vae),
        vae_decoder=VAEDecoderGraph(vae),
        text_encoder_2=text_2,
    )
    cache = StepCacheDims.of(unet)
    if cache is not None:
        modules.step_cache = cache
        shallow = [b.name for b in shallow_bank_specs(spec, RANK_AXIS, vpt_tokens, cache)]
        lora = sum(1 for name in shallow if is_lora_bank(name))
        for name in FULL_UNETS:
            full, fused = modules.get(name), name in CFG_UNETS
            modules.with_features[name] = FeatureGraph(full, fused)
            setattr(modules, SHALLOW_OF[name], ShallowGraph(full, fused, shallow, lora))
    return modules


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
    cache: StepCacheDims | None = None,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of graph `name` (with `base`: of its adapter-free variant), in argument order; `rank` as
    in `bank_specs`. `text_dim` is the U-Net's context width; `xl`: an SDXL backbone's (the U-Nets take the added
    conditioning, and `text_encoder_2` exists); `cache`: the step-caching split where the export has one (the full
    U-Nets return their deep features, and the shallow U-Nets exist)."""
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
    shallow = name in (UNET_CFG_SHALLOW, UNET_SHALLOW)
    if shallow and cache is None:
        raise ValueError(f"{name} is a step-caching graph; this export has none (its U-Net has no outer skip branch)")
    banks = shallow_bank_specs(spec, rank, vpt_tokens, cache) if shallow else bank_specs(spec, "unet", rank, vpt_tokens)
    # A shallow path that runs no targeted module takes no adapter inputs at all, like a base variant.
    adapters = [] if base or not banks else [slot, *banks]
    features = []
    if cache is not None:
        feature = ("rows", cache.feature_channels, "height", "width")
        fused = (UNET_CFG, UNET_CFG_SHALLOW)
        names = (DEEP_FEATURE, UNCOND_DEEP_FEATURE) if name in fused else (DEEP_FEATURE,)
        features = [TensorSpec(n, feature, "float32") for n in names]
    added: list[TensorSpec] = []
    if xl is not None:
        added = [TensorSpec("text_embeds", ("rows", xl.pooled_dim), "float32")]
        if name in (UNET_CFG, UNET_CFG_SHALLOW):
            added.append(TensorSpec("uncond_text_embeds", ("rows", xl.pooled_dim), "float32"))
        added.append(TensorSpec("time_ids", ("rows", TIME_IDS), "float32"))
    if name in (UNET_CFG, UNET_CFG_SHALLOW):
        uncond = TensorSpec("uncond_hidden_states", ("rows", "context", text_dim), "float32")
        scale = TensorSpec("guidance_scale", ("rows",), "float32")
        conditioning = [latent, step, context, uncond, scale, *added]
    elif name in (UNET_PLAIN, UNET_SHALLOW):
        conditioning = [latent, step, context, *added]
    if name in (UNET_CFG, UNET_PLAIN):
        return [*conditioning, *adapters], [noise, *features]
    if shallow:
        return [*conditioning, *features, *adapters], [noise]
    if base:
        raise ValueError(f"{name} has no base variant; graphs with one: {', '.join(BASE_GRAPHS)}")
    image = TensorSpec("image", ("rows", 3, "image_height", "image_width"), "float32")
    if name == VAE_ENCODER:
        moments = TensorSpec("latent_moments", ("rows", 2 * latent_channels, "height", "width"), "float32")
        return [image], [moments]
    if name == VAE_DECODER:
        return [TensorSpec("latent_sample", latent.shape, "float32")], [image]
    raise ValueError(f"unknown graph {name!r}; known: {', '.join(GRAPHS)}, {TEXT_ENCODER_2}")
