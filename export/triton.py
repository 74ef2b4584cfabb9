"""An export directory -> an NVIDIA Triton Inference Server model repository (`diffplex export --triton DIR`).

    DIR/<graph>/config.pbtxt        platform onnxruntime_onnx, IO from the manifest
    DIR/<graph>/1/model.onnx        the portable graph (+ its external-data files)
    DIR/<graph>_trt/config.pbtxt    platform tensorrt_plan, for graphs with a TensorRT engine
    DIR/<graph>_trt/1/model.plan

Names and data types come from the manifest; dims (-1 for a dynamic axis: rows, slots, the LoRA banks' rank, ...)
from the ONNX graph itself, which is
what Triton checks the config against (the exporter may leave an axis symbolic that the manifest fixes, e.g.
the text encoder's output length), after checking that the two agree wherever both are fixed.
Triton's dynamic batching concatenates requests along the first axis. That is right for the VAE graphs (every
input is per row) and wrong for the text encoder and U-Nets: their adapter banks are per request and
`adapter_slot` indexes into them, so concatenated banks would point rows at another request's adapters.
Those take `max_batch_size: 0` (whole tensors, batched by diffplex's own engine, which builds one bank set
per call); the VAE graphs batch up to `max_batch_size` rows with a short queue delay.
The U-Nets' reduced variants (adapter-free `*.base.onnx`, LoRA-only `*.lora.onnx`) are not served: the
repository holds the banked graphs, which serve every row (slot 0 is adapter-free), and a reduced variant
cannot stand in for them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from export.errors import ExportError
from export.graphs import VAE_DECODER, VAE_ENCODER
from export.manifest import GraphEntry, Manifest, is_base_variant, is_lora_variant, load_manifest

ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
BATCHED_GRAPHS = frozenset({VAE_ENCODER, VAE_DECODER})  # no per-request banks: safe to batch across requests

# numpy-style names (manifest) -> Triton's DataType enum names
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 32  # rows per VAE call Triton may form (TensorRT engines' profile allows 32)
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000  # how long a VAE request may wait for others to batch with
    variant: str | None = None  # an ONNX variant of the manifest to serve instead of the portable graph ("fp16")


Shapes = dict[str, list[int]]  # tensor name -> dims, -1 where dynamic


def graph_shapes(path: Path) -> Shapes:
    """The dims of a graph's inputs and outputs as the ONNX file declares them (weights are not loaded)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        value.name: [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output]
    }


def _dims(spec: dict, shapes: Shapes, model: str) -> list[int]:
    dims = shapes.get(spec["name"])
    declared = [-1 if isinstance(d, str) else int(d) for d in spec["shape"]]
    agree = (
        dims is not None
        and len(dims) == len(declared)
        and all(a == b for a, b in zip(dims, declared, strict=True) if a >= 0 and b >= 0)  # both fixed: equal
    )
    if not agree:
        raise ExportError(
            f"{model}: {spec['name']} is {dims} in the graph but {spec['shape']} in the manifest: re-export it"
        )
    return dims


def _tensor(spec: dict, shapes: Shapes, batched: bool, model: str) -> str:
    dtype = TRITON_TYPES.get(spec["dtype"])
    if dtype is None:
        raise ExportError(f"tensor {spec['name']!r} has dtype {spec['dtype']}, which Triton configs cannot name")
    dims = _dims(spec, shapes, model)
    if batched:
        if dims[0] != -1:
            raise ExportError(f"{model}: {spec['name']} needs a dynamic first axis to be batched by Triton")
        dims = dims[1:]  # with batching Triton adds the batch axis itself
    text = ", ".join(str(d) for d in dims)
    return f'  {{\n    name: "{spec["name"]}"\n    data_type: {dtype}\n    dims: [ {text} ]\n  }}'


def model_config(
    name: str, entry: GraphEntry, shapes: Shapes, platform: str, batched: bool, options: TritonOptions
) -> str:
    """The config.pbtxt text of one graph (`shapes`: its dims, from `graph_shapes`)."""
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {options.max_batch_size if batched else 0}",
        "input [\n" + ",\n".join(_tensor(s, shapes, batched, name) for s in entry.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(s, shapes, batched, name) for s in entry.outputs) + "\n]",
    ]
    if batched:
        sizes = ", ".join(str(s) for s in options.preferred_batch_sizes if s <= options.max_batch_size)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}"
        )
    else:
        lines.insert(
            0, "# adapter banks are per request: diffplex's engine batches rows, Triton must not (export/triton.py)"
        )
    if platform == TENSORRT_PLATFORM:
        lines.append("instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]")
    return "\n".join(lines) + "\n"


def _place(export_dir: Path, files: list[str], version_dir: Path, model_file: str) -> None:
    """The graph as `1/<model_file>`, its external-data files beside it under their own names (the graph
    refers to them by relative path)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export_dir / files[0], version_dir / model_file)
    for sidecar in files[1:]:
        shutil.copyfile(export_dir / sidecar, version_dir / Path(sidecar).name)


def write_repository(export_dir: Path, out: Path, options: TritonOptions | None = None) -> list[str]:
    """Write the model repository of `export_dir` into `out`; returns the model names written."""
    options = options or TritonOptions()
    if options.variant is not None and (is_base_variant(options.variant) or is_lora_variant(options.variant)):
        raise ExportError(
            f"{options.variant!r} is a variant without some of the adapter inputs the Triton models take: "
            "serve the portable graph or its fp16 variant"
        )
    export_dir, out = Path(export_dir), Path(out)
    manifest: Manifest = load_manifest(export_dir)
    written = []
    for name, entry in manifest.graphs.items():
        batched = name in BATCHED_GRAPHS
        graph = entry.file
        if options.variant is not None:
            if options.variant not in entry.variants:
                raise ExportError(f"{name} has no {options.variant!r} variant: export it with that option first")
            graph = entry.variants[options.variant]
        shapes = graph_shapes(export_dir / graph)
        models = [(name, ONNX_PLATFORM, [graph, *entry.external_data], "model.onnx")]
        engine = entry.variants.get("tensorrt_fp16") or entry.variants.get("tensorrt")
        if engine is not None:
            models.append((f"{name}_trt", TENSORRT_PLATFORM, [engine], "model.plan"))
        for model, platform, files, model_file in models:
            target = out / model
            if target.exists():
                shutil.rmtree(target)  # a stale version directory must not outlive a re-export
            _place(export_dir, files, target / "1", model_file)
            (target / "config.pbtxt").write_text(model_config(model, entry, shapes, platform, batched, options))
            written.append(model)
    return written
