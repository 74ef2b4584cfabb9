"""`diffplex bench guidance`: what each sampling option saves in U-Net rows, FLOPs and time, and what it costs in
quality.

The options (off by default, `service/engine`): a guidance interval (cond and uncond rows only in the first half
of the trajectory, cond rows alone after), an uncond refresh (the uncond rows recomputed every 2nd step, reused in
between), and step caching (`cache_interval` k: the full U-Net every k-th step, its shallow path on the cached deep
feature between; alone and with the guidance interval). Each runs the same prompts and seeds through the ONNX
Runtime engine (DDIM), and the judge scores the images: prompt accuracy, and the Fréchet distance of its features
to rendered images. Prompt accuracy is compared on the same prompts and seeds, so the difference is the option's
doing. U-Net FLOPs count a shallow row at its counted share of a full one (step_cache_flops.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from export.backbone import load_backbone
from models.shapes.dataset import make_batch
from models.shapes.judge import ShapesJudge
from models.shapes.metrics import frechet_distance, prompt_hits
from service.bench.export_dir import ensure_export
from service.bench.report import machine, table
from service.bench.step_cache_flops import REAL_SIZES, shallow_share, shipped_shallow_share
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime

GUIDANCE = 5.0
INTERVAL = {"guidance_interval": (0.0, 0.5)}
OPTIONS: dict[str, dict] = {
    "baseline": {},
    "guidance_interval_0_0.5": INTERVAL,
    "uncond_refresh_2": {"uncond_refresh": 2},
    "cache_interval_2": {"cache_interval": 2},
    "cache_interval_3": {"cache_interval": 3},
    "cache_interval_5": {"cache_interval": 5},
    "guidance_interval_0_0.5 + cache_interval_2": INTERVAL | {"cache_interval": 2},
    "guidance_interval_0_0.5 + cache_interval_3": INTERVAL | {"cache_interval": 3},
}


def guidance_options(runtime: OnnxRuntime, samples: int, steps: int = 25, shallow_share: float = 1.0) -> dict:
    """Per option: seconds, U-Net rows, prompt accuracy, Fréchet distance, and speed-up / rows / FLOPs saved vs
    baseline; `shallow_share`: a shallow row's FLOPs over a full row's."""
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
        shallow = engine.stats["unet_shallow_rows"]
        out[name] = {
            "seconds": seconds,
            "unet_rows": engine.stats["unet_rows"],
            "unet_flops_rows": engine.stats["unet_rows"] - shallow + shallow_share * shallow,  # in full rows
            "prompt_accuracy": float(hits[name].mean()),
            "frechet_distance": frechet_distance(verdict.features, real),
        }
    base = out["baseline"]
    for name, entry in out.items():
        entry["speedup"] = base["seconds"] / entry["seconds"]
        entry["unet_rows_saved"] = 1 - entry["unet_rows"] / base["unet_rows"]
        entry["unet_flops_saved"] = 1 - entry["unet_flops_rows"] / base["unet_flops_rows"]
        # Paired with the baseline (same prompts and seeds): prompts it gets right that the baseline missed, and back.
        entry["gained"] = int((hits[name] & ~hits["baseline"]).sum())
        entry["lost"] = int((hits["baseline"] & ~hits[name]).sum())
    return out


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    if args.samples < 2 or args.steps < 2:
        raise SystemExit("diffplex bench guidance: --samples and --steps must be at least 2")
    ensure_export(args.model, args.export, progress)
    runtime = OnnxRuntime(args.export, prefer_gpu=True, threads=args.threads)
    if not runtime.step_cache:
        raise SystemExit(f"diffplex bench guidance: {args.export} has no step-caching graphs: re-export it")
    share = shallow_share(load_backbone(args.model).unet, runtime.info.latent_size)
    progress(f"guidance options: {args.samples} prompts each, {args.steps} steps")
    return {
        "machine": machine(),
        "runtime": runtime.name,
        "samples": args.samples,
        "steps": args.steps,
        "shallow_share": share,
        "shallow_share_real": {name: shipped_shallow_share(*config) for name, config in REAL_SIZES.items()},
        "options": guidance_options(runtime, args.samples, args.steps, share),
    }


def markdown(results: dict, command: str) -> str:
    r = results
    rows = [
        [
            name,
            f"{e['speedup']:.2f}x",
            f"{100 * e['unet_rows_saved']:.0f}%",
            f"{100 * e.get('unet_flops_saved', e['unet_rows_saved']):.0f}%",
            f"{100 * e['prompt_accuracy']:.1f}%",
            f"+{e['gained']} / -{e['lost']}",
            f"{e['frechet_distance']:.1f}",
        ]
        for name, e in r["options"].items()
    ]
    header = ["option", "speed vs baseline", "U-Net rows saved", "U-Net FLOPs saved", "prompt accuracy"]
    header.append("vs baseline, prompts")
    return "\n".join(
        [
            "## Guidance options (`diffplex bench guidance`)",
            "",
            f"Machine: {r['machine']}; runtime {r['runtime']}; DDIM {r['steps']} steps, guidance {GUIDANCE}; "
            f"{r['samples']} prompts per option, the same prompts and seeds for each, judged. "
            f"Command: `{command}`.",
            "",
            table([*header, "Fréchet distance"], rows),
            "",
            _shares(r),
        ]
    )


def _shares(r: dict) -> str:
    """Where the shallow step's FLOPs were counted: here and at the widths users run."""
    if "shallow_share" not in r:
        return ""
    real = ", ".join(f"{100 * share:.1f}% on {name}" for name, share in r.get("shallow_share_real", {}).items())
    return (
        f"A step-caching shallow row costs {100 * r['shallow_share']:.1f}% of a full row's FLOPs on this backbone "
        f"(counted, `service/bench/step_cache_flops.py`); {real}."
    )
