"""Trace a graph module to ONNX, and save ONNX models with external data when protobuf's 2 GB limit bites."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.graphs import TensorSpec

# protobuf cannot serialize a message over 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def external_data_name(path: Path) -> str:
    return path.name + ".data"


def save_model(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save `model`, moving its weights to `<name>.data` beside it when it is too big for one protobuf.

    Returns the names of the files written besides `path`.
    """
    path = Path(path)
    sidecar = path.parent / external_data_name(path)
    if sidecar.exists():
        sidecar.unlink()
    big = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    if big:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=sidecar.name,
            size_threshold=1024,
        )
        return [sidecar.name]
    onnx.save_model(model, path)
    return []


def export_module(
    module: nn.Module,
    example: list[torch.Tensor],
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    path: Path,
    opset: int,
) -> list[str]:
    """Trace `module` on `example` (argument order = `inputs`) into `path`; returns its sidecar files.

    TorchScript tracing (dynamo=False) is what diffusers' and onnxruntime's SD exporters use; dynamic
    axes come from the symbolic dims of the tensor specs. Export goes through a temporary directory so
    the exporter's own external-data layout never leaks into the export directory.
    """
    dynamic_axes = {t.name: t.dynamic_axes for t in [*inputs, *outputs] if t.dynamic_axes}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks are expected
        traced = Path(tmp) / "graph.onnx"
        torch.onnx.export(
            module,
            tuple(example),
            str(traced),
            input_names=[t.name for t in inputs],
            output_names=[t.name for t in outputs],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        model = onnx.load(str(traced), load_external_data=True)
    _check_io(model, inputs, outputs, path)
    return save_model(model, path)


def _check_io(model: onnx.ModelProto, inputs: list[TensorSpec], outputs: list[TensorSpec], path: Path) -> None:
    """The tracer drops inputs the graph does not use; the contract needs every one of them."""
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != [t.name for t in inputs] or got_out != [t.name for t in outputs]:
        missing = sorted({t.name for t in inputs} - set(got_in))
        raise RuntimeError(
            f"{os.path.basename(path)}: traced inputs {got_in} / outputs {got_out} differ from the contract"
            + (f" (unused inputs dropped: {missing})" if missing else "")
        )
