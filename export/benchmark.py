"""U-Net rows/s: PyTorch eager vs ONNX Runtime (portable and level-"all" optimized graphs), side by side,
and the adapter-free base variants of the graph (same inputs less the banks: what the banks cost).

Every runner gets the same inputs (random banks in 3 slots, rows spread over them) and the runs are
interleaved round by round, so machine noise hits all of them alike; ratios are what to quote.
`diffplex export --bench` prints the result as JSON.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from export.backbone import load_backbone
from export.graphs import UNET_CFG
from export.manifest import load_manifest
from export.ort_session import open_session
from export.random_inputs import Dims, random_inputs

# The banks' rank: 16, the fixed R of exports before the rank axis was dynamic, so figures stay comparable with
# theirs; `diffplex bench lora-rank` prices the rank itself.
BENCH_RANK = 16


def _time(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_unet(
    export_dir: Path, model_dir: Path | None = None, rows: int = 8, rounds: int = 5, threads: int | None = None
) -> dict:
    manifest = load_manifest(export_dir)
    backbone = load_backbone(Path(model_dir or manifest.source))
    modules = backbone.graph_modules(manifest.spec, manifest.vpt_tokens)
    inputs, _ = manifest.graph_io(UNET_CFG)
    size = manifest.latent_size
    rank = min(BENCH_RANK, manifest.lora_rank)
    dims = Dims(rows, 3, size, size, manifest.spec.max_length, manifest.vae_scale_factor, rank)
    values = random_inputs(inputs, dims, seed=0)
    feed = {spec.name: value.numpy() for spec, value in zip(inputs, values, strict=True)}
    if threads:
        torch.set_num_threads(threads)
    entry = manifest.graphs[UNET_CFG]
    runners: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        module = modules.get(UNET_CFG)
        runners["pytorch_eager"] = lambda: module(*values)
        for variant, file in {"onnxruntime": entry.file, **entry.variants}.items():
            if file.endswith(".onnx") and "fp16" not in variant:
                session = open_session(Path(export_dir) / file, threads=threads)
                taken = {i.name: feed[i.name] for i in session.get_inputs()}
                runners[variant] = lambda session=session, taken=taken: session.run(None, taken)
        for run in runners.values():  # warm-up: allocations, ORT's first-run planning
            run()
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                seconds[name].append(_time(run))
    # Each call runs `rows` guided rows, i.e. 2 * rows U-Net rows (cond + uncond in one pass).
    median = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "graph": UNET_CFG,
        "guided_rows_per_call": rows,
        "unet_rows_per_call": 2 * rows,
        "bank_rank": rank,
        "rounds": rounds,
        "threads": threads or torch.get_num_threads(),
        "unet_rows_per_second": {name: 2 * rows / m for name, m in median.items()},
        "speedup_vs_pytorch_eager": {name: median["pytorch_eager"] / m for name, m in median.items()},
    }
