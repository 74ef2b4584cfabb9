"""An export as versions before the LoRA banks' dynamic rank axis wrote it (their bank inputs fixed at R)."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from adapters.packing import RANK_AXIS
from export.manifest import load_manifest, record_files


def with_fixed_rank(export: Path, target: Path, rank: int) -> Path:
    """A copy of `export` as such an export was written: the ONNX files' bank inputs and the manifest's shapes fix
    the rank axis at `rank`, and `lora_rank` is it."""
    shutil.copytree(export, target)
    manifest = load_manifest(target)
    onnx_files = {f for f in manifest.files if f.endswith(".onnx")}
    for entry in manifest.graphs.values():
        for tensor in entry.inputs:
            tensor["shape"] = [rank if d == RANK_AXIS else d for d in tensor["shape"]]
        for file in {entry.file, *entry.variants.values()} & onnx_files:
            model = onnx.load(str(target / file))
            for value in model.graph.input:
                for dim in value.type.tensor_type.shape.dim:
                    if dim.dim_param == RANK_AXIS:
                        dim.dim_value = rank  # replaces the symbolic name (a dim holds one or the other)
            onnx.save(model, str(target / file))
    manifest.lora_rank = rank
    manifest.files = record_files(target, list(manifest.files))
    manifest.save(target)
    return target
