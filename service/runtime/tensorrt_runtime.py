"""TensorRT backend: the export's `.plan` engines behind the same interface (CUDA machines only)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from export.manifest import load_manifest
from export.tensorrt_session import TensorRTSession
from service.runtime.info import export_info
from service.runtime.onnx_runtime import OnnxRuntime


class _EngineRunner:
    """An engine behind the ONNX Runtime backend's `GraphRunner` interface."""

    def __init__(self, session: TensorRTSession) -> None:
        self.session = session
        self.outputs = list(session.output_names)

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.run_all(tensors, self.outputs[:1])[0]

    def run_all(self, tensors: dict[str, torch.Tensor], outputs: list[str] | None = None) -> list[torch.Tensor]:
        feed = {name: tensors[name] for name in self.session.input_names}
        out = self.session.run_torch(feed)
        return [out[name].float().cpu() for name in outputs or self.outputs]


class TensorRTRuntime(OnnxRuntime):
    """Reuses the ONNX Runtime backend's argument plumbing; only the graph runners differ."""

    name = "tensorrt"

    def __init__(self, export_dir: Path, expected_fingerprint: str | None = None, fp16: bool = False) -> None:
        export_dir = Path(export_dir)
        manifest = load_manifest(export_dir, expected_fingerprint)
        if manifest.sdxl is not None:
            raise FileNotFoundError(
                f"{export_dir} is an SDXL export: TensorRT engines for SDXL are not built yet; serve it with "
                "DIFFPLEX_BACKEND=onnxruntime"
            )
        key = "tensorrt_fp16" if fp16 else "tensorrt"
        if missing := [g for g, e in manifest.graphs.items() if key not in e.variants]:
            flag = "--tensorrt --fp16" if fp16 else "--tensorrt"
            raise FileNotFoundError(
                f"{export_dir} has no TensorRT engines for {', '.join(missing)}: export with {flag}"
            )
        # Step caching's shallow engines are not run here yet: requests with `cache_interval` > 1 are refused.
        self.info = replace(export_info(export_dir, manifest), step_cache_channels=0)
        self.graphs = {
            g: _EngineRunner(TensorRTSession(export_dir / e.variants[key])) for g, e in manifest.graphs.items()
        }
        # No engines of the U-Nets' base or LoRA-only variants are built (export/tensorrt_build.py): every call
        # runs the banked engines, adapter-free rows in slot 0. `_unet` reads all three tables, so each is set.
        self.base_graphs = {}
        self.lora_graphs = {}
        self.vpt_masks = {}
