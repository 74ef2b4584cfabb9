"""Parity of exported graphs with the PyTorch reference (`diffplex export --check`).

For every graph, on seeded random inputs with random adapter banks:
- `ort_vs_torch`: ONNX Runtime output vs the banked PyTorch modules, relative error (max |a-b| / max |b|);
- `batch_invariance` (banked graphs and base variants): each row run alone equals the same row in the batch;
- `slot0_is_base` (banked graphs): rows in slot 0 equal the unadapted diffusers / transformers model;
- `fresh_feature_vs_full` (step caching's shallow U-Nets): the shallow graph given the deep feature(s) the full
  PyTorch graph computes on the same inputs equals that full graph's output (across backends, so within the
  `ort_vs_torch` bound; tests/export/test_step_cache.py holds each backend to 1e-5 on its own).
Variants: the portable graph, the ORT-optimized one, fp16 (looser limits), TensorRT engines (`.plan`) and
ONNX Runtime's CUDA provider where present (`cuda=True`, used by deploy/gpu_check.sh); the U-Nets' base
variants (no adapter inputs) in the same forms, against the unadapted model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adapters.packing import ADAPTER_SLOT
from adapters.text_encoder import encode_inputs_embeds, encode_penultimate, encode_penultimate_and_pooled
from export.backbone import Backbone, load_backbone
from export.graph_names import CFG_UNETS, SHALLOW_OF, TEXT_ENCODER_2, UNET_CFG_SHALLOW, UNET_SHALLOW
from export.graphs import (
    TEXT_ENCODER,
    UNET_CFG,
    UNET_PLAIN,
    GraphModules,
    TensorSpec,
    fused_cfg,
)
from export.manifest import (
    GraphEntry,
    Manifest,
    base_variant,
    is_base_variant,
    is_lora_variant,
    load_manifest,
    lora_variant,
)
from export.ort_session import available_providers, open_session
from export.random_inputs import Dims, random_inputs
from export.step_cache import DEEP_FEATURE, UNCOND_DEEP_FEATURE, capturing_deep_feature, shallow_unet

# The banks' rank in the checks: another value than the export traced with (exporter.py), so a graph whose
# rank axis had been fixed at the tracing value would fail here.
PARITY_RANK = 8
FP32_TOLERANCE = 1e-4
BATCH_TOLERANCE = 1e-5
FP16_TOLERANCE = 2e-2
BANKED_GRAPHS = (TEXT_ENCODER, TEXT_ENCODER_2, UNET_CFG, UNET_PLAIN, UNET_CFG_SHALLOW, UNET_SHALLOW)
FEATURES = (DEEP_FEATURE, UNCOND_DEEP_FEATURE)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) or 1.0
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max() / scale)


@dataclass
class GraphReport:
    graph: str
    variant: str
    metrics: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped and all(self.metrics[k] <= self.limits[k] for k in self.limits)

    def line(self) -> str:
        if self.skipped:
            return f"{self.graph:<14} {self.variant:<18} skipped: {self.skipped}"
        parts = ", ".join(f"{k} {v:.2e} (<= {self.limits[k]:.0e})" for k, v in self.metrics.items())
        return f"{self.graph:<14} {self.variant:<18} {'ok  ' if self.ok else 'FAIL'} {parts}"


def _feed(inputs: list[TensorSpec], values: list[torch.Tensor]) -> dict[str, np.ndarray]:
    return {spec.name: value.numpy() for spec, value in zip(inputs, values, strict=True)}


def _take_rows(inputs: list[TensorSpec], values: list[torch.Tensor], rows: list[int]) -> list[torch.Tensor]:
    """The same batch restricted to `rows`; banks (first axis = slots) are kept whole."""
    index = torch.tensor(rows)
    return [v[index] if spec.shape and spec.shape[0] == "rows" else v for spec, v in zip(inputs, values, strict=True)]


@torch.no_grad()
def _base_output(
    name: str, backbone: Backbone, inputs: list[TensorSpec], values: list[torch.Tensor], features: bool
) -> list[torch.Tensor]:
    """The unadapted model on the same inputs (banked modules idle: they are the base modules then): every output.
    `features`: the full U-Nets return their deep features too (the export has step caching)."""
    args = dict(zip((s.name for s in inputs), values, strict=True))
    if name == TEXT_ENCODER_2:
        return list(encode_penultimate_and_pooled(backbone.text_encoder_2, args["inputs_embeds"], args["eos_index"]))
    if name == TEXT_ENCODER:
        encode = encode_penultimate if backbone.is_xl else encode_inputs_embeds
        return [encode(backbone.text_encoder, args["inputs_embeds"])]
    fused = name in CFG_UNETS
    if name in SHALLOW_OF.values():
        feature = torch.cat([args[n] for n in FEATURES]) if fused else args[DEEP_FEATURE]
        with shallow_unet(backbone.unet, feature):
            return [_unet_output(backbone, args, fused)]
    if not features:
        return [_unet_output(backbone, args, fused)]
    with capturing_deep_feature(backbone.unet) as captured:
        noise = _unet_output(backbone, args, fused)
    rows = noise.shape[0]
    return [noise, captured[0][:rows], captured[0][rows:]] if fused else [noise, captured[0]]


def _unet_output(backbone: Backbone, args: dict[str, torch.Tensor], fused: bool) -> torch.Tensor:
    added = {}
    if backbone.is_xl:
        pooled = torch.cat([args["text_embeds"], args["uncond_text_embeds"]]) if fused else args["text_embeds"]
        times = torch.cat([args["time_ids"], args["time_ids"]]) if fused else args["time_ids"]
        added = {"text_embeds": pooled, "time_ids": times}
    if not fused:
        extra = {"added_cond_kwargs": added} if added else {}
        return backbone.unet(
            args["sample"], args["timestep"], args["encoder_hidden_states"], return_dict=False, **extra
        )[0]
    return fused_cfg(
        backbone.unet,
        args["sample"],
        args["timestep"],
        args["encoder_hidden_states"],
        args["uncond_hidden_states"],
        args["guidance_scale"],
        added or None,
    )


def check_graph(
    name: str,
    path: Path,
    variant: str,
    modules: GraphModules,
    backbone: Backbone,
    manifest: Manifest,
    seed: int = 0,
    threads: int | None = None,
) -> GraphReport:
    base = is_base_variant(variant)
    vpt_tokens = 0 if is_lora_variant(variant) else manifest.vpt_tokens
    inputs, _ = manifest.graph_io(name, vpt_tokens, base)
    dims = Dims(
        rows=4,
        slots=3,
        height=manifest.latent_size,
        width=manifest.latent_size,
        context=manifest.spec.max_length,
        vae_scale_factor=manifest.vae_scale_factor,
        rank=min(PARITY_RANK, manifest.lora_rank),
    )
    banked = name in BANKED_GRAPHS and not base
    values = random_inputs(inputs, dims, seed, slot_rows=[0, 1, 2, 1] if banked else None)
    fp16 = "fp16" in variant
    report = GraphReport(name, variant)
    try:
        session = _open(path, variant, threads)
    except Exception as e:
        if fp16:
            report.skipped = f"cannot run the fp16 graph here ({str(e).splitlines()[0][:120]})"
            return report
        raise
    # Every output is checked (SDXL's second text encoder has two); each metric is the worst over them.
    got = session.run(None, _feed(inputs, values))
    with torch.no_grad():
        want = _outputs(modules.traced(name)(*values))
    report.metrics["ort_vs_torch"] = max(relative_error(g, w.numpy()) for g, w in zip(got, want, strict=True))
    report.limits["ort_vs_torch"] = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    if banked or base:
        alone = [session.run(None, _feed(inputs, _take_rows(inputs, values, [r]))) for r in range(4)]
        rows = [np.concatenate([a[k] for a in alone]) for k in range(len(got))]
        report.metrics["batch_invariance"] = max(relative_error(r, g) for r, g in zip(rows, got, strict=True))
        report.limits["batch_invariance"] = FP16_TOLERANCE if fp16 else BATCH_TOLERANCE
    if banked:
        slot0 = [i for i, s in enumerate(values[[s.name for s in inputs].index(ADAPTER_SLOT)].tolist()) if s == 0]
        unadapted = _base_output(
            name, backbone, inputs, _take_rows(inputs, values, slot0), manifest.step_cache is not None
        )
        errors = [relative_error(g[slot0], u.numpy()) for g, u in zip(got, unadapted, strict=True)]
        report.metrics["slot0_is_base"] = max(errors)
        report.limits["slot0_is_base"] = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    if name in SHALLOW_OF.values():
        full_inputs, _ = manifest.graph_io(_full_of(name), vpt_tokens, base)
        full_values = random_inputs(full_inputs, dims, seed, slot_rows=[0, 1, 2, 1] if banked else None)
        report.metrics["fresh_feature_vs_full"] = _fresh_feature_error(
            _full_of(name), session, inputs, full_inputs, full_values, modules
        )
        report.limits["fresh_feature_vs_full"] = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    return report


def _full_of(shallow: str) -> str:
    return next(full for full, s in SHALLOW_OF.items() if s == shallow)


def _fresh_feature_error(
    full: str,
    session,
    inputs: list[TensorSpec],
    full_inputs: list[TensorSpec],
    full_values: list[torch.Tensor],
    modules: GraphModules,
) -> float:
    """The shallow graph (`session`, `inputs`) on the deep feature(s) the full PyTorch graph computes from
    `full_values`, and the same conditioning and banks, vs that full graph's noise prediction: what a shallow step
    right after a full one would be off by."""
    with torch.no_grad():
        noise, *features = modules.traced(full)(*full_values)
    given = dict(zip((s.name for s in full_inputs), full_values, strict=True))
    given |= dict(zip(FEATURES, features, strict=False))
    (got,) = session.run(None, {s.name: given[s.name].numpy() for s in inputs})
    return relative_error(got, noise.numpy())


def _outputs(result: torch.Tensor | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]


def _open(path: Path, variant: str, threads: int | None):
    if path.suffix == ".plan":
        from export.tensorrt_session import TensorRTSession

        return TensorRTSession(path)
    providers = ["CUDAExecutionProvider"] if variant.endswith("cuda") else None
    return open_session(path, providers=providers, threads=threads)


def variants_to_check(entry: GraphEntry, cuda: bool) -> dict[str, str]:
    """Variant name -> file: the portable graph, its ORT / fp16 / TensorRT variants, and the CUDA provider
    on the portable and fp16 graphs when this onnxruntime has it and `cuda` is asked for."""
    files = {"onnx": entry.file} | dict(entry.variants)
    if cuda and "CUDAExecutionProvider" in available_providers():
        files["onnx_cuda"] = entry.file
        for variant in ("fp16", base_variant(), base_variant("fp16"), lora_variant(), lora_variant("fp16")):
            if variant in entry.variants:
                files[f"{variant}_cuda"] = entry.variants[variant]
    return files


def check_export(
    export_dir: Path, model_dir: Path | None = None, seed: int = 0, threads: int | None = None, cuda: bool = False
) -> list[GraphReport]:
    """Check every graph (and its ORT-optimized and fp16 variants) against the backbone it came from."""
    manifest = load_manifest(export_dir)
    backbone = load_backbone(Path(model_dir or manifest.source))
    modules = backbone.graph_modules(manifest.spec, manifest.vpt_tokens)
    reports = []
    for name, entry in manifest.graphs.items():
        for variant, file in variants_to_check(entry, cuda).items():
            path = Path(export_dir) / file
            reports.append(check_graph(name, path, variant, modules, backbone, manifest, seed, threads))
    return reports
