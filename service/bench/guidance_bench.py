"""`diffplex bench guidance`: what each guidance option saves in U-Net rows and time, and what it costs in quality.

The options (off by default, `service/engine`): a guidance interval (cond and uncond rows only in the first half
of the trajectory, cond rows alone after) and an uncond refresh (the uncond rows recomputed every 2nd step,
reused in between). Each runs the same prompts and seeds through the ONNX Runtime engine (DDIM), and the judge
scores the images: prompt accuracy, and the Fréchet distance of its features to rendered images. Prompt
accuracy is compared on the same prompts and seeds, so the difference is the option's doing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from models.shapes.dataset import make_batch
from models.shapes.judge import ShapesJudge
from models.shapes.metrics import frechet_distance, prompt_hits
from service.bench.export_dir import ensure_export
from service.bench.report import machine, table
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime

GUIDANCE = 5.0
OPTIONS: dict[str, dict] = {
    "baseline": {},
    "guidance_interval_0_0.5": {"guidance_interval": (0.0, 0.5)},
    "uncond_refresh_2": {"uncond_refresh": 2},
}


def guidance_options(runtime: OnnxRuntime, samples: int, steps: int = 25) -> dict:
    """Per option: seconds, U-Net rows, prompt accuracy, Fréchet distance, and speed-up / rows saved vs baseline."""
    judge = ShapesJudge.load()
    batch = make_batch(samples, seed=0)
    real = judge(make_batch(samples, seed=1).images).features
    out, hits = {}, {}
    for name, kw in OPTIONS.items():
        engine = Engine(runtime, EngineSettings(max_rows=32, max_queue=samples))  # every request queued at once
        started = time.perf_counter()
        jobs = [
            engine.submit(GenerationRequest(p, seed=i, steps=steps, guidance_scale=GUIDANCE, **kw))
            for i, p in enumerate(batch.captions)
        ]
        engine.run_until_idle()
        seconds = time.perf_counter() - started
        verdict = judge(np.stack([j.result(timeout=0).image for j in jobs]))
        hits[name] = np.array(prompt_hits(batch.named, verdict.labels))
        out[name] = {
            "seconds": seconds,
            "unet_rows": engine.stats["unet_rows"],
            "prompt_accuracy": float(hits[name].mean()),
            "frechet_distance": frechet_distance(verdict.features, real),
        }
    base = out["baseline"]
    for name, entry in out.items():
        entry["speedup"] = base["seconds"] / entry["seconds"]
        entry["unet_rows_saved"] = 1 - entry["unet_rows"] / base["unet_rows"]
        # Paired with the baseline (same prompts and seeds): prompts it gets right that the baseline missed, and back.
        entry["gained"] = int((hits[name] & ~hits["baseline"]).sum())
        entry["lost"] = int((hits["baseline"] & ~hits[name]).sum())
    return out


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    if args.samples < 2 or args.steps < 2:
        raise SystemExit("diffplex bench guidance: --samples and --steps must be at least 2")
    ensure_export(args.model, args.export, progress)
    runtime = OnnxRuntime(args.export, prefer_gpu=True, threads=args.threads)
    progress(f"guidance options: {args.samples} prompts each, {args.steps} steps")
    return {
        "machine": machine(),
        "runtime": runtime.name,
        "samples": args.samples,
        "steps": args.steps,
        "options": guidance_options(runtime, args.samples, args.steps),
    }


def markdown(results: dict, command: str) -> str:
    r = results
    rows = [
        [
            name,
            f"{e['speedup']:.2f}x",
            f"{100 * e['unet_rows_saved']:.0f}%",
            f"{100 * e['prompt_accuracy']:.1f}%",
            f"+{e['gained']} / -{e['lost']}",
            f"{e['frechet_distance']:.1f}",
        ]
        for name, e in r["options"].items()
    ]
    header = ["option", "speed vs baseline", "U-Net rows saved", "prompt accuracy", "vs baseline, prompts"]
    return "\n".join(
        [
            "## Guidance options (`diffplex bench guidance`)",
            "",
            f"Machine: {r['machine']}; runtime {r['runtime']}; DDIM {r['steps']} steps, guidance {GUIDANCE}; "
            f"{r['samples']} prompts per option, the same prompts and seeds for each, judged. "
            f"Command: `{command}`.",
            "",
            table([*header, "Fréchet distance"], rows),
        ]
    )
