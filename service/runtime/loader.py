"""`load_runtime(settings)`: the backend a deployment asked for, over the model or its export."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from service.runtime.base import Runtime

Backend = Literal["pytorch", "onnxruntime", "tensorrt"]


def load_runtime(
    backend: Backend,
    model_dir: Path,
    export_dir: Path | None = None,
    lora_rank: int = 16,
    vpt_tokens: int = 8,
    threads: int | None = None,
    fp16: bool = False,
    base_graphs: bool = True,
) -> Runtime:
    if backend == "pytorch":
        from service.runtime.torch_runtime import TorchRuntime

        return TorchRuntime(model_dir, lora_rank=lora_rank, vpt_tokens=vpt_tokens)
    if export_dir is None:
        raise ValueError(f"the {backend} backend runs exported graphs: give an export directory (diffplex export)")
    if backend == "onnxruntime":
        from service.runtime.onnx_runtime import OnnxRuntime

        return OnnxRuntime(export_dir, threads=threads, fp16=fp16, base_graphs=base_graphs)
    if backend == "tensorrt":
        from service.runtime.tensorrt_runtime import TensorRTRuntime

        return TensorRTRuntime(export_dir, fp16=fp16)
    raise ValueError(f"unknown backend {backend!r}: pytorch, onnxruntime or tensorrt")
