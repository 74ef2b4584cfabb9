"""ONNX Runtime backend over an export directory (`diffplex export`): CPU, or CUDA with I/O binding.

U-Net calls run the smallest graph that serves them: calls in which no row carries an adapter
(`adapter_free`) run the export's base variants, which take no banks, and calls in which no row's slot
holds VPT tokens run its LoRA-only variants. The banked graph pays for its per-row bank gathers and VPT
keys even where every bank is zero. Exports without those variants run the calls on the banked graphs.
Each variant's session holds its own copy of the U-Net's weights (export/README.md says why they are not
shared); `base_graphs=False` / `lora_graphs=False` leave them closed.

Step caching runs the export's shallow U-Nets (and their reduced variants) on the deep features that the full
U-Nets return beside the noise; a call asks a graph only for the outputs it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from adapters.packing import VPT_MASK
from export.graph_names import SHALLOW_OF, TEXT_ENCODER_2
from export.graphs import TEXT_ENCODER, UNET_CFG, UNET_PLAIN, VAE_DECODER, VAE_ENCODER
from export.manifest import BASE_VARIANT, LORA_VARIANT, GraphEntry, family_variant, load_manifest
from export.ort_session import available_providers, open_session
from export.step_cache import DEEP_FEATURE, UNCOND_DEEP_FEATURE
from service.runtime.base import ADDED_COND, ADDED_COND_CFG, AddedCond, Banks, DeepFeatures, Runtime
from service.runtime.info import export_info


def session_files(entry: GraphEntry, fp16: bool) -> tuple[str, dict[str, str]]:
    """The file a graph's session runs, and its reduced variants' (family -> file; none if not exported)."""
    # The portable graph, optimized by ORT at load: measured faster than the saved level-"all" file
    # (BENCHMARKS.md, export section), which only saves start-up time.
    variant = "fp16" if fp16 and "fp16" in entry.variants else None
    # Reduced variants of the same precision, or none: an fp32 base beside an fp16 banked graph would make a
    # request's image depend on whether its batchmates carry adapters.
    reduced = {family: entry.variants.get(family_variant(family, variant)) for family in (BASE_VARIANT, LORA_VARIANT)}
    return entry.variants[variant] if variant else entry.file, {f: file for f, file in reduced.items() if file}


def carries_vpt(adapter_slot: torch.Tensor, banks: Banks, mask_names: list[str]) -> bool:
    """Whether any row's slot holds a VPT token in any block (the masks are a few bytes per slot)."""
    return any(bool(banks[name][adapter_slot].any()) for name in mask_names)


class GraphRunner:
    """One graph's session: feeds by input name, drops inputs the graph does not take (banks when P = 0, all
    adapter inputs for a base variant)."""

    def __init__(self, session: ort.InferenceSession, cuda: bool) -> None:
        self.session = session
        self.cuda = cuda
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.calls = 0  # which session served a call, for tests and debugging

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The graph's first output (the full U-Nets of a step-caching export also return deep features)."""
        return self.run_all(tensors, self.outputs[:1])[0]

    def run_all(self, tensors: dict[str, torch.Tensor], outputs: list[str] | None = None) -> list[torch.Tensor]:
        """`outputs` (default: all) in that order; the graph runs whole either way, the others are not copied out."""
        self.calls += 1
        outputs = outputs or self.outputs
        feed = {name: np.ascontiguousarray(tensors[name].numpy()) for name in self.inputs}
        if not self.cuda:
            return [torch.from_numpy(a) for a in self.session.run(outputs, feed)]
        # I/O binding: inputs copied to the GPU once, the outputs allocated there by ORT, one copy back.
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        for name in outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return [torch.from_numpy(a) for a in binding.copy_outputs_to_cpu()]


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(
        self,
        export_dir: Path,
        expected_fingerprint: str | None = None,
        prefer_gpu: bool = True,
        threads: int | None = None,
        fp16: bool = False,
        base_graphs: bool = True,
        lora_graphs: bool = True,
    ) -> None:
        """`base_graphs=False` / `lora_graphs=False` open no base / LoRA-only sessions: less memory, and the
        calls they would have served run on the banked graphs."""
        export_dir = Path(export_dir)
        manifest = load_manifest(export_dir, expected_fingerprint)
        providers = available_providers(prefer_gpu)
        cuda = providers[0] == "CUDAExecutionProvider"
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        self.info = export_info(export_dir, manifest)
        self.graphs: dict[str, GraphRunner] = {}
        self.base_graphs: dict[str, GraphRunner] = {}  # U-Net graph -> its adapter-free variant, where exported
        self.lora_graphs: dict[str, GraphRunner] = {}  # U-Net graph -> its LoRA-only variant, where exported
        self.vpt_masks: dict[str, list[str]] = {}  # graph -> its `vpt_mask.{j}` inputs, read once

        def runner(file: str) -> GraphRunner:
            return GraphRunner(open_session(export_dir / file, providers=providers, threads=threads), cuda)

        for graph, entry in manifest.graphs.items():
            file, reduced = session_files(entry, fp16)
            self.graphs[graph] = runner(file)
            self.vpt_masks[graph] = [name for name in self.graphs[graph].inputs if name.startswith(VPT_MASK)]
            if base_graphs and BASE_VARIANT in reduced:
                self.base_graphs[graph] = runner(reduced[BASE_VARIANT])
            if lora_graphs and LORA_VARIANT in reduced:
                self.lora_graphs[graph] = runner(reduced[LORA_VARIANT])

    def encode_text(self, inputs_embeds: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks) -> torch.Tensor:
        return self.graphs[TEXT_ENCODER]({"inputs_embeds": inputs_embeds, "adapter_slot": adapter_slot, **banks})

    def encode_text_2(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor, adapter_slot: torch.Tensor, banks: Banks
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if TEXT_ENCODER_2 not in self.graphs:
            return super().encode_text_2(inputs_embeds, eos_index, adapter_slot, banks)
        feed = {"inputs_embeds": inputs_embeds, "eos_index": eos_index, "adapter_slot": adapter_slot, **banks}
        hidden, pooled = self.graphs[TEXT_ENCODER_2].run_all(feed)
        return hidden, pooled

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
        tensors = {
            "sample": sample,
            "timestep": timestep.float(),
            "encoder_hidden_states": cond,
            "uncond_hidden_states": uncond,
            "guidance_scale": guidance_scale.float(),
        }
        tensors |= dict(zip(ADDED_COND_CFG, self.added_args(added, ADDED_COND_CFG), strict=False))
        return self._unet(UNET_CFG, tensors, adapter_slot, banks, adapter_free, features, return_features)

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
        tensors = {"sample": sample, "timestep": timestep.float(), "encoder_hidden_states": cond}
        tensors |= dict(zip(ADDED_COND, self.added_args(added, ADDED_COND), strict=False))
        return self._unet(UNET_PLAIN, tensors, adapter_slot, banks, adapter_free, features, return_features)

    def _unet(
        self,
        graph: str,
        tensors: dict[str, torch.Tensor],
        adapter_slot: torch.Tensor,
        banks: Banks,
        adapter_free: bool,
        features: DeepFeatures | None,
        return_features: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The smallest variant that serves the call: of `graph`, or with `features` of its shallow graph (step
        caching); the noise prediction, or with `return_features` the full graph's outputs (noise, features)."""
        self.check_step_cache(features, return_features)
        if features is not None:
            graph = SHALLOW_OF[graph]
            tensors = tensors | dict(zip((DEEP_FEATURE, UNCOND_DEEP_FEATURE), features, strict=False))
        runner = self.graphs[graph]
        if adapter_free and graph in self.base_graphs:
            runner = self.base_graphs[graph]
        elif graph in self.lora_graphs and not carries_vpt(adapter_slot, banks, self.vpt_masks[graph]):
            runner = self.lora_graphs[graph]  # it takes the LoRA banks, not the VPT ones
        feed = {**tensors, "adapter_slot": adapter_slot, **banks}  # each runner takes the inputs its graph has
        if return_features:
            return tuple(runner.run_all(feed))
        return runner(feed)

    def vae_encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.graphs[VAE_ENCODER]({"image": image})

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.graphs[VAE_DECODER]({"latent_sample": latents})
