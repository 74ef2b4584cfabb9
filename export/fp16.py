"""fp32 ONNX graph -> fp16 weights and arithmetic, fp32 IO, via onnxruntime's own converter."""

from __future__ import annotations

from pathlib import Path

import onnx

from export.onnx_io import save_model

# Normalizations and Softmax accumulate in fp32: SD-style graphs overflow or drift in fp16 there.
FP32_OPS = ("GroupNormalization", "LayerNormalization", "Softmax", "Pow")


def convert_fp16(source: Path, target: Path) -> list[str]:
    """Write the fp16 variant of `source` to `target`; returns the files written beside it."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source), load_external_data=True)
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_OPS))
    drop_repeated_nodes(half.graph)
    return save_model(half, target)


def drop_repeated_nodes(graph: onnx.GraphProto) -> int:
    """Remove nodes that repeat an earlier node exactly (same name, op, inputs, outputs, attributes).

    The converter adds one `<weight>_cast_to_fp32` Cast per fp32-kept consumer of an fp16 initializer, all
    under the same name. A weight that two fp32-kept nodes read (a VPT block's norm1, while the graphs also
    normed the prompt tokens) gets two identical Casts, and ONNX Runtime refuses a graph with two nodes of one
    name. The first copy already produces the tensor, so the repeats are dropped. Returns how many were.
    """
    seen: set[bytes] = set()
    kept = []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    dropped = len(graph.node) - len(kept)
    if dropped:
        del graph.node[:]
        graph.node.extend(kept)
    return dropped
