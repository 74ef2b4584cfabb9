"""TensorRT engines from the exported ONNX graphs, one optimization profile over rows, slots, LoRA rank and latent size.

Needs the `tensorrt` Python package and a CUDA GPU (`pip install 'diffplex[gpu]'`); `deploy/gpu_check.sh`
runs build + parity + timing on such a machine. Engines are written as `<graph>.plan` (or `.fp16.plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.packing import RANK_AXIS
from export.errors import ExportError
from export.manifest import Manifest


@dataclass(frozen=True)
class ProfileRanges:
    """(min, opt, max) of each dynamic axis; the engine accepts any shape inside them."""

    rows: tuple[int, int, int] = (1, 8, 32)
    slots: tuple[int, int, int] = (1, 4, 16)
    latent_scale: tuple[float, float, float] = (0.5, 1.0, 2.0)  # times the model's native latent size
    # The LoRA banks' rank (RANK_AXIS): 1 to the manifest's cap, tuned for 16. The banks share the dim's name, so
    # TensorRT holds them equal in a call; `pack_banks` gives every bank of a graph one rank per call.
    rank_opt: int = 16

    def rank(self, manifest: Manifest) -> tuple[int, int, int]:
        cap = manifest.lora_rank
        return 1, min(self.rank_opt, cap), cap

    def shape(self, dims: list, manifest: Manifest, which: int) -> tuple[int, ...]:
        latent = max(1, int(manifest.latent_size * self.latent_scale[which]))
        named = {
            "rows": self.rows[which],
            "slots": self.slots[which],
            RANK_AXIS: self.rank(manifest)[which],
            "height": latent,
            "width": latent,
            "image_height": latent * manifest.vae_scale_factor,
            "image_width": latent * manifest.vae_scale_factor,
            "context": manifest.spec.max_length,
        }
        return tuple(named[d] if isinstance(d, str) else int(d) for d in dims)


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ExportError("--tensorrt needs the tensorrt package and a CUDA GPU: pip install 'diffplex[gpu]'") from e
    try:
        import torch

        if not torch.cuda.is_available():
            raise ExportError("--tensorrt needs a CUDA GPU; none is visible to this process")
    except ImportError:
        pass
    return trt


def engine_name(graph: str, fp16: bool) -> str:
    return f"{graph}.fp16.plan" if fp16 else f"{graph}.plan"


def build_engine(
    onnx_path: Path, inputs: list[dict], manifest: Manifest, fp16: bool, ranges: ProfileRanges, workspace_gib: int = 8
) -> bytes:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for spec in inputs:
        profile.set_shape(spec["name"], *(ranges.shape(spec["shape"], manifest, k) for k in range(3)))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    return bytes(serialized)


def build_engines(
    export_dir: Path,
    manifest: Manifest,
    fp16: bool,
    progress: Callable[[str], None] = print,
    ranges: ProfileRanges | None = None,
) -> list[str]:
    """Build an engine per graph; records them as the graph's `tensorrt` variant. Returns the files written.

    Engines are built from the banked graphs only (the U-Nets' base and LoRA-only variants get none yet): the
    TensorRT runtime runs every call on the banked engines (adapter-free rows in slot 0)."""
    ranges = ranges or ProfileRanges()
    written = []
    for name, entry in manifest.graphs.items():
        progress(f"TensorRT: {name} ({'fp16' if fp16 else 'fp32'})")
        plan = build_engine(Path(export_dir) / entry.file, entry.inputs, manifest, fp16, ranges)
        file = engine_name(name, fp16)
        (Path(export_dir) / file).write_bytes(plan)
        entry.variants["tensorrt_fp16" if fp16 else "tensorrt"] = file
        written.append(file)
    return written
