"""`diffplex bench precision`: fp32 vs fp16 graphs (ONNX Runtime, CUDA provider) on the same requests.

Only meaningful on a GPU: without CUDA the section records why it was skipped rather than a CPU figure
that would say nothing about fp16 serving.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from export.exporter import ExportOptions, export_pipeline
from export.manifest import MANIFEST, load_manifest
from models.shapes.dataset import make_batch
from service.bench.report import machine, table
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime


def _images_per_s(runtime: OnnxRuntime, prompts: list[str], steps: int) -> tuple[float, np.ndarray]:
    engine = Engine(runtime, EngineSettings(max_rows=32))
    started = time.perf_counter()
    jobs = [engine.submit(GenerationRequest(p, seed=i, steps=steps)) for i, p in enumerate(prompts)]
    engine.run_until_idle()
    seconds = time.perf_counter() - started
    return len(prompts) / seconds, np.stack([j.result(timeout=0).image for j in jobs])


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    results: dict = {"machine": machine()}
    if not torch.cuda.is_available():
        results["skipped"] = "no CUDA GPU here (torch.cuda.is_available() is False): fp16 is measured on GPU only"
        return results
    export_dir = args.export
    has_fp16 = (export_dir / MANIFEST).exists() and all(
        "fp16" in e.variants for e in load_manifest(export_dir).graphs.values()
    )
    if not has_fp16:
        progress(f"exporting with fp16 variants to {export_dir}")
        export_pipeline(ExportOptions(model_dir=args.model, out_dir=export_dir, fp16=True), progress=progress)
    runtimes = {"fp32": OnnxRuntime(export_dir, fp16=False), "fp16": OnnxRuntime(export_dir, fp16=True)}
    if not runtimes["fp16"].name.endswith("cuda"):
        results["skipped"] = f"ONNX Runtime has no CUDA provider here ({runtimes['fp16'].name})"
        return results
    prompts = make_batch(args.requests, seed=0).captions
    speeds: dict[str, list[float]] = {k: [] for k in runtimes}
    images: dict[str, np.ndarray] = {}
    for runtime in runtimes.values():  # warm-up (CUDA kernels, cuDNN autotuning)
        _images_per_s(runtime, prompts[:2], 2)
    for r in range(args.rounds):
        for name, runtime in runtimes.items():
            speed, images[name] = _images_per_s(runtime, prompts, args.steps)
            speeds[name].append(speed)
        progress(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} images/s" for k, v in speeds.items()))
    median = {k: float(np.median(v)) for k, v in speeds.items()}
    diff = np.abs(images["fp16"].astype(np.int16) - images["fp32"].astype(np.int16))
    return results | {
        "runtime": runtimes["fp32"].name,
        "requests": args.requests,
        "steps": args.steps,
        "rounds": args.rounds,
        "images_per_s": median,
        "ratio": median["fp16"] / median["fp32"],
        "pixel_diff": {"max": int(diff.max()), "mean": float(diff.mean())},
    }


def markdown(r: dict, command: str) -> str:
    head = ["## fp32 vs fp16 (`diffplex bench precision`)", ""]
    if "skipped" in r:
        return "\n".join([*head, f"Machine: {r['machine']}. Skipped: {r['skipped']}. Command: `{command}`."])
    rows = [[k, f"{v:.2f}"] for k, v in r["images_per_s"].items()]
    return "\n".join(
        [
            *head,
            f"Machine: {r['machine']}; {r['runtime']}; {r['requests']} requests of {r['steps']} DDIM steps in one "
            f"engine run, median of {r['rounds']} interleaved rounds. Command: `{command}`.",
            "",
            table(["graphs", "images/s"], rows),
            "",
            f"fp16 / fp32: **{r['ratio']:.2f}x**; pixel difference on the same seeds: max {r['pixel_diff']['max']}, "
            f"mean {r['pixel_diff']['mean']:.2f} (of 255).",
        ]
    )
