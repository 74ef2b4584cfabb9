"""diffusers pipeline directory -> export directory: ONNX graphs (+ ORT-optimized, fp16, TensorRT), manifest.

Layout of an export directory:
    manifest.json                 IO, dims, targets, R (the rank cap), P, fingerprint, sha256 of every file
    text_encoder.onnx             inputs_embeds + adapter_slot + LoRA banks -> last_hidden_state
    unet_cfg.onnx / unet.onnx     fused-CFG and plain U-Net with LoRA and VPT banks
    unet_cfg.base.onnx / unet.base.onnx   their adapter-free variants (no adapter_slot, no banks)
    unet_cfg.lora.onnx / unet.lora.onnx   their LoRA-only variants (no VPT banks; exported when P > 0)
    unet_cfg_shallow.onnx / unet_shallow.onnx (+ .base, .lora)   step caching's shallow U-Nets, on the deep
                                  feature the full U-Nets also return (export/step_cache.py)
    vae_encoder.onnx / vae_decoder.onnx
    *.opt.onnx                    ORT level-"all" optimized graphs (CPU provider)
    *.fp16.onnx                   fp16 weights and math, fp32 IO (with --fp16)
    *.plan                        TensorRT engines (with --tensorrt, on a CUDA machine)
    tokenizer/ scheduler/ token_embeddings.safetensors   what the host needs around the graphs
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file

from adapters.errors import AdapterError
from adapters.lora import rank_bucket
from adapters.packing import ADAPTER_SLOT, RANK_AXIS
from adapters.spec import DEFAULT_TEXT_ENCODER_TARGETS, DEFAULT_UNET_TARGETS, build_spec
from adapters.targets import DEFAULT_LORA_RANK, DEFAULT_VPT_TOKENS
from export.backbone import Backbone, load_backbone
from export.errors import ExportError
from export.fp16 import convert_fp16
from export.graph_names import SHALLOW_OF, TEXT_ENCODER, TEXT_ENCODER_2
from export.graphs import BASE_GRAPHS, GRAPHS, TensorSpec, graph_io
from export.manifest import (
    BASE_VARIANT,
    LORA_VARIANT,
    TOKEN_EMBEDDING,
    TOKEN_EMBEDDING_2,
    TOKEN_EMBEDDINGS,
    GraphEntry,
    Manifest,
    family_variant,
    record_files,
)
from export.onnx_io import export_module
from export.ort_session import optimize_graph
from export.random_inputs import Dims, random_inputs

MIN_OPSET = 17


@dataclass
class ExportOptions:
    model_dir: Path
    out_dir: Path
    lora_rank: int = DEFAULT_LORA_RANK  # the cap: the banks' rank axis is dynamic, each call's up to this
    unet_targets: tuple[str, ...] = DEFAULT_UNET_TARGETS
    text_encoder_targets: tuple[str, ...] = DEFAULT_TEXT_ENCODER_TARGETS
    vpt_tokens: int = DEFAULT_VPT_TOKENS
    opset: int = 17
    fp16: bool = False
    tensorrt: bool = False
    optimize: bool = True
    graphs: tuple[str, ...] = GRAPHS
    timings: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if self.opset < MIN_OPSET:
            raise ExportError(f"--opset {self.opset} is too old: the graphs need opset {MIN_OPSET} or newer")
        if not 1 <= self.lora_rank <= 1024:
            raise ExportError(f"--lora-rank must be between 1 and 1024, not {self.lora_rank}")
        if not 0 <= self.vpt_tokens <= 256:
            raise ExportError(f"--vpt-tokens must be between 0 and 256, not {self.vpt_tokens}")
        if unknown := [g for g in self.graphs if g not in GRAPHS]:
            raise ExportError(f"unknown graphs {', '.join(unknown)}; known: {', '.join(GRAPHS)}")


Progress = Callable[[str], None]


def export_pipeline(options: ExportOptions, progress: Progress = print) -> Manifest:
    options.validate()
    started = time.perf_counter()
    backbone = load_backbone(options.model_dir)
    if backbone.is_xl and options.tensorrt:
        raise ExportError(
            f"{options.model_dir} is an SDXL pipeline: its TensorRT engines are not built yet; export its ONNX graphs "
            "(without --tensorrt) and serve them with DIFFPLEX_BACKEND=onnxruntime"
        )
    try:
        spec = build_spec(
            backbone.unet,
            backbone.text_encoder,
            options.unet_targets,
            options.text_encoder_targets,
            text_encoder_2=backbone.text_encoder_2,
        )
    except AdapterError as e:
        raise ExportError(str(e)) from e
    if options.vpt_tokens and not spec.vpt_blocks:
        progress("note: this U-Net's transformer blocks cannot take VPT tokens; exporting without VPT banks")
    vpt_tokens = options.vpt_tokens if spec.vpt_blocks else 0
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modules = backbone.graph_modules(spec, vpt_tokens)
    xl = backbone.xl_dims
    sdxl = (
        None if xl is None else xl.to_dict() | {"force_zeros_for_empty_prompt": backbone.force_zeros_for_empty_prompt}
    )
    # SDXL's second encoder is exported with the first: the text side is one step of the contract.
    names = [*options.graphs, *([TEXT_ENCODER_2] if xl is not None and TEXT_ENCODER in options.graphs else [])]
    cache = modules.step_cache
    if cache is None:
        if skipped := [g for g in names if g in SHALLOW_OF.values()]:
            progress(f"note: this U-Net has no outer skip branch to cache below; not exporting {', '.join(skipped)}")
        names = [g for g in names if g not in SHALLOW_OF.values()]
    dims = Dims(
        rows=2,
        slots=3,
        height=backbone.latent_size,
        width=backbone.latent_size,
        context=spec.max_length,
        vae_scale_factor=backbone.vae_scale_factor,
        rank=rank_bucket(1, options.lora_rank),  # any rank traces the same graph: the axis is dynamic
    )
    written: list[str] = []
    graphs: dict[str, GraphEntry] = {}
    for n, name in enumerate(names, start=1):
        step = _numbered(progress, n, len(names))
        io = partial(
            graph_io,
            name,
            spec,
            RANK_AXIS,
            latent_channels=backbone.latent_channels,
            text_dim=backbone.text_dim,
            xl=xl,
            cache=cache,
        )
        inputs, outputs = io(vpt_tokens=vpt_tokens)
        example = random_inputs(inputs, dims, seed=n)
        files = _export_graph(modules.traced(name), example, inputs, outputs, out, name, options, step)
        entry = GraphEntry(
            file=files.file,
            inputs=[t.to_dict() for t in inputs],
            outputs=[t.to_dict() for t in outputs],
            external_data=files.external_data,
            variants=files.variants,
        )
        written += files.written
        if name in BASE_GRAPHS and any(t.name == ADAPTER_SLOT for t in inputs):  # else it is its own base variant
            # The adapter-free variant (no `adapter_slot`, no banks) and, with VPT banks, the LoRA-only one:
            # the same example less the inputs they do not take. The runtime picks the smallest a call needs.
            families = {BASE_VARIANT: io(vpt_tokens=0, base=True)[0]}
            families |= {LORA_VARIANT: io(vpt_tokens=0)[0]} if vpt_tokens else {}
            for family, reduced in families.items():
                taken = [v for t, v in zip(inputs, example, strict=True) if t in reduced]
                variant = _export_graph(
                    modules.traced(name), taken, reduced, outputs, out, f"{name}.{family}", options, step
                )
                entry.variants[family_variant(family)] = variant.file
                entry.variants |= {family_variant(family, k): v for k, v in variant.variants.items()}
                written += variant.written
        graphs[name] = entry
    written += _write_host_files(backbone, out)
    manifest = Manifest(
        spec=spec,
        lora_rank=options.lora_rank,
        vpt_tokens=vpt_tokens,
        opset=options.opset,
        latent_channels=backbone.latent_channels,
        latent_size=backbone.latent_size,
        latent_multiple=backbone.latent_multiple,
        vae_scale_factor=backbone.vae_scale_factor,
        scaling_factor=float(backbone.vae.config.scaling_factor),
        text_dim=backbone.text_dim,
        prediction_type=backbone.prediction_type,
        graphs=graphs,
        files={},
        source=str(Path(options.model_dir).resolve()),
        torch_version=torch.__version__,
        sdxl=sdxl,
        step_cache=cache,
    )
    if options.tensorrt:
        from export.tensorrt_build import build_engines

        progress("TensorRT: building engines (this takes minutes per graph)")
        written += build_engines(out, manifest, fp16=options.fp16, progress=progress)
    manifest.files = record_files(out, written)
    manifest.save(out)
    options.timings["total"] = time.perf_counter() - started
    progress(f"exported {len(graphs)} graphs to {out} in {options.timings['total']:.1f} s")
    return manifest


def _numbered(progress: Progress, n: int, total: int) -> Progress:
    return lambda line: progress(f"[{n}/{total}] {line}")


@dataclass
class _GraphFiles:
    """One traced graph and its variants, as written."""

    file: str
    external_data: list[str]
    variants: dict[str, str]  # "ort_optimized" / "fp16" -> file
    written: list[str]  # every file, sidecars included


def _export_graph(
    module: torch.nn.Module,
    example: list[torch.Tensor],
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    out: Path,
    stem: str,
    options: ExportOptions,
    progress: Progress,
) -> _GraphFiles:
    """`<stem>.onnx`, then its ORT-optimized (`<stem>.opt.onnx`) and fp16 (`<stem>.fp16.onnx`) variants."""
    progress(f"{stem}: tracing to ONNX (opset {options.opset})")
    t0 = time.perf_counter()
    file = f"{stem}.onnx"
    sidecars = export_module(module, example, inputs, outputs, out / file, options.opset)
    graph = _GraphFiles(file, sidecars, {}, [file, *sidecars])
    options.timings[f"export.{stem}"] = time.perf_counter() - t0
    if options.optimize:
        t0 = time.perf_counter()
        progress(f"{stem}: ONNX Runtime graph optimization (level all)")
        optimized = graph.variants["ort_optimized"] = f"{stem}.opt.onnx"
        graph.written += [optimized, *optimize_graph(out / file, out / optimized)]
        options.timings[f"optimize.{stem}"] = time.perf_counter() - t0
    if options.fp16:
        progress(f"{stem}: fp16 conversion (fp32 inputs and outputs kept)")
        half = graph.variants["fp16"] = f"{stem}.fp16.onnx"
        graph.written += [half, *convert_fp16(out / file, out / half)]
    return graph


def _write_host_files(backbone: Backbone, out: Path) -> list[str]:
    """Tokenizer(s), scheduler config and the token embedding table(s), copied beside the graphs."""
    written = []
    components = ("tokenizer", "scheduler") + (("tokenizer_2",) if backbone.is_xl else ())
    for component in components:
        target = out / component
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(backbone.model_dir) / component, target)
        written += [str(p.relative_to(out)) for p in sorted(target.rglob("*")) if p.is_file()]
    encoders = {TOKEN_EMBEDDING: backbone.text_encoder, TOKEN_EMBEDDING_2: backbone.text_encoder_2}
    tables = {
        name: encoder.get_input_embeddings().weight.detach().to(torch.float32).contiguous()
        for name, encoder in encoders.items()
        if encoder is not None
    }
    save_file(tables, out / TOKEN_EMBEDDINGS)
    return [*written, TOKEN_EMBEDDINGS]
