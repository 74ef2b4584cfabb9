"""`load_runtime(...)`: the backend a deployment asked for, over the model or its export; `load_backbone_info(...)`:
what that backend would report about the backbone, without loading the weights that run it (role "api")."""

from __future__ import annotations

from pathlib import Path

from adapters.targets import DEFAULT_LORA_RANK, DEFAULT_VPT_TOKENS
from service.core.settings import BACKENDS, Backend
from service.runtime.base import BackboneInfo, Runtime


def _exported(backend: str, export_dir: Path | None) -> Path:
    """The export directory an exported backend runs, or ValueError saying what to give."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if export_dir is None:
        raise ValueError(f"the {backend} backend runs exported graphs: give an export directory (diffplex export)")
    return Path(export_dir)


def load_runtime(
    backend: Backend,
    model_dir: Path,
    export_dir: Path | None = None,
    lora_rank: int = DEFAULT_LORA_RANK,
    vpt_tokens: int = DEFAULT_VPT_TOKENS,
    threads: int | None = None,
    fp16: bool = False,
    base_graphs: bool = True,
    lora_graphs: bool = True,
    model_variant: str | None = None,
) -> Runtime:
    """`model_variant`: the weights variant of `model_dir` (export/variants.py; None: detect)."""
    if backend == "pytorch":
        from service.runtime.torch_runtime import TorchRuntime

        return TorchRuntime(model_dir, lora_rank=lora_rank, vpt_tokens=vpt_tokens, variant=model_variant)
    export_dir = _exported(backend, export_dir)
    if backend == "onnxruntime":
        from service.runtime.onnx_runtime import OnnxRuntime

        return OnnxRuntime(export_dir, threads=threads, fp16=fp16, base_graphs=base_graphs, lora_graphs=lora_graphs)
    from service.runtime.tensorrt_runtime import TensorRTRuntime

    return TensorRTRuntime(export_dir, fp16=fp16)


def load_backbone_info(
    backend: Backend,
    model_dir: Path,
    export_dir: Path | None = None,
    lora_rank: int = DEFAULT_LORA_RANK,
    vpt_tokens: int = DEFAULT_VPT_TOKENS,
    model_variant: str | None = None,
) -> BackboneInfo:
    """`load_runtime(...).info` (the same spec and fingerprint) without a graph session or a model parameter:
    megabytes where the runtime holds the model's gigabytes (deploy/README.md has the figures)."""
    from service.runtime.info import export_info, pipeline_info

    if backend == "pytorch":
        from export.backbone import load_backbone_without_weights

        return pipeline_info(load_backbone_without_weights(model_dir, model_variant), lora_rank, vpt_tokens)
    from export.manifest import load_manifest

    export_dir = _exported(backend, export_dir)
    # The graphs are the workers' to run (and check against their hashes, at load): of the export, an API
    # replica reads only the manifest, tokenizer, scheduler config and token embeddings.
    return export_info(export_dir, load_manifest(export_dir, verify_hashes=False))
