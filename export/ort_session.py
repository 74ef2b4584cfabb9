"""ONNX Runtime sessions for exported graphs, and the offline graph optimization pass (level "all")."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from export.onnx_io import external_data_name


def available_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu) and asked for, CPU always last."""
    have = ort.get_available_providers()
    order = ["CUDAExecutionProvider", "CPUExecutionProvider"] if prefer_gpu else ["CPUExecutionProvider"]
    return [p for p in order if p in have]


def session_options(threads: int | None = None, level: str = "all") -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Idle intra-op threads spin by default, waiting for the next call. The engine runs several sessions
    # (text encoder, U-Net, VAE) with Python work between calls, so spinning threads of one session steal
    # the cores that the host code and the next session need; measured in BENCHMARKS.md (engine section).
    spin = os.environ.get("DIFFPLEX_ORT_SPIN", "0") == "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    return options


def open_session(
    path: Path, providers: list[str] | None = None, threads: int | None = None, level: str = "all"
) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(path), session_options(threads, level), providers=providers or available_providers(prefer_gpu=False)
    )


def optimize_graph(source: Path, target: Path, threads: int | None = None) -> list[str]:
    """Run ORT's level-"all" optimizations on the CPU provider once and save the result as `target`.

    Loading the saved graph skips those passes at start-up. Level "all" includes layout-specific
    fusions, so the file is for the CPU provider of this ORT version (the manifest says so); CUDA
    sessions use the portable graph and optimize it themselves. Returns sidecar files written.
    """
    options = session_options(threads, "all")
    options.optimized_model_filepath = str(target)
    sidecars = []
    if (source.parent / external_data_name(source)).exists():
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", external_data_name(target)
        )
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        sidecars.append(external_data_name(target))
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return sidecars
