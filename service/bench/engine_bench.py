"""`diffplex bench engine`: the engine's ratios, each pair measured side by side in one run.

- ONNX Runtime engine vs diffusers' `StableDiffusionPipeline` (same model, sampler, steps), 1 and 8 requests;
- fused vs split CFG; 8 requests with 8 distinct LoRAs in one batch vs no adapters, and vs diffusers
  swapping LoRAs per request (`load_lora_weights` / `unload_lora_weights`);
- continuous vs request-level batching with mixed step counts;
- the guidance interval and uncond-refresh options: speed gain and quality cost (judge; `guidance_bench`, also
  a suite of its own, `diffplex bench guidance`).
Pairs are interleaved round by round and the median is kept, so machine noise hits both sides alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from adapters.formats import load_adapter_file
from adapters.lora import rank_bucket
from adapters.training.lora import save_lora
from models.shapes.dataset import make_batch
from service.bench.comparators import SplitCFGRuntime, run_request_level
from service.bench.export_dir import ensure_export
from service.bench.guidance_bench import GUIDANCE, guidance_options
from service.bench.lora_macs import lora_macs, sd15_lora_macs
from service.bench.report import machine, table
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.base import Runtime
from service.runtime.onnx_runtime import OnnxRuntime

LORA_RANK = 4  # the benched LoRAs' rank


@dataclass
class BenchSettings:
    model_dir: Path
    export_dir: Path
    steps: int = 20
    rounds: int = 3
    quality_samples: int = 64
    threads: int | None = None


def _median_seconds(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for run in runs.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(s) for name, s in seconds.items()}


def _engine_run(runtime: Runtime, requests: Callable[[], list[GenerationRequest]], **config: object) -> Callable:
    """Every request queued at once, the engine batching them continuously."""

    def run() -> list[np.ndarray]:
        engine = Engine(runtime, EngineSettings(**config))
        jobs = [engine.submit(r) for r in requests()]
        engine.run_until_idle()
        return [j.result(timeout=0).image for j in jobs]

    return run


def _request_level_run(
    runtime: Runtime, requests: Callable[[], list[GenerationRequest]], batch: int, **config: object
) -> Callable:
    """The same requests batched whole, `batch` at a time (comparators.py)."""

    def run() -> list[np.ndarray]:
        engine = Engine(runtime, EngineSettings(**config))
        return [result.image for result in run_request_level(engine, requests(), batch)]

    return run


def _prompts(count: int, seed: int = 0) -> list[str]:
    return make_batch(count, seed=seed).captions


def _random_lora_files(model_dir: Path, out: Path, count: int, rank: int = LORA_RANK) -> list[Path]:
    """Distinct random LoRAs written by diffusers' own `save_lora_weights`, readable by both sides."""
    from peft import LoraConfig

    from adapters.spec import DEFAULT_UNET_TARGETS

    files = []
    for i in range(count):
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
        torch.manual_seed(100 + i)
        pipe.unet.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, target_modules=list(DEFAULT_UNET_TARGETS), init_lora_weights=False)
        )
        with torch.no_grad():
            for name, p in pipe.unet.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.05)  # peft's non-zero init is far too strong for a plausible adapter
        files.append(out / f"lora{i}.safetensors")
        save_lora(pipe, files[-1])
    return files


def run_bench(settings: BenchSettings, progress: Callable[[str], None] = print) -> dict:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    ensure_export(settings.model_dir, settings.export_dir, progress)
    runtime = OnnxRuntime(settings.export_dir, prefer_gpu=True, threads=settings.threads)
    # The same export with every call on the full banked graphs (DIFFPLEX_ENGINE__BASE_GRAPHS and __LORA_GRAPHS
    # false): separates what mixing adapters in a batch costs from what carrying banks at all costs, and prices
    # the LoRA-only graphs.
    banked_only = OnnxRuntime(
        settings.export_dir, prefer_gpu=True, threads=settings.threads, base_graphs=False, lora_graphs=False
    )
    pipe = StableDiffusionPipeline.from_pretrained(
        settings.model_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    steps, rounds = settings.steps, settings.rounds
    prompts = _prompts(16)
    results: dict = {"machine": machine(), "runtime": runtime.name, "steps": steps, "rounds": rounds}

    def requests(n: int, **kw: object) -> Callable[[], list[GenerationRequest]]:
        return lambda: [
            GenerationRequest(prompts[i], seed=i, steps=steps, guidance_scale=GUIDANCE, **kw) for i in range(n)
        ]

    def diffusers_batched(n: int) -> Callable[[], object]:
        """n prompts in one pipeline call: diffusers' best case, open only to requests that agree on
        steps, guidance, sampler and size (a static batch)."""
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        return lambda: pipe(prompts[:n], num_inference_steps=steps, guidance_scale=GUIDANCE, generator=gens)

    def diffusers_sequential(n: int) -> Callable[[], object]:
        """One pipeline call per request, as a server around the pipeline serves concurrent requests."""

        def run() -> None:
            for i in range(n):
                gen = torch.Generator().manual_seed(i)
                pipe(prompts[i], num_inference_steps=steps, guidance_scale=GUIDANCE, generator=gen)

        return run

    progress("engine (ORT) vs diffusers, 1 request")
    s = _median_seconds({"engine": _engine_run(runtime, requests(1)), "diffusers": diffusers_batched(1)}, rounds)
    results["vs_diffusers_1"] = {
        "images_per_s": {k: 1 / v for k, v in s.items()},
        "ratio": s["diffusers"] / s["engine"],
    }
    progress("engine (ORT) vs diffusers, 8 concurrent requests")
    s = _median_seconds(
        {
            "engine": _engine_run(runtime, requests(8)),
            "diffusers_sequential": diffusers_sequential(8),
            "diffusers_batched": diffusers_batched(8),
        },
        rounds,
    )
    results["vs_diffusers_8"] = {
        "images_per_s": {k: 8 / v for k, v in s.items()},
        "ratio": s["diffusers_sequential"] / s["engine"],
        "ratio_vs_batched": s["diffusers_batched"] / s["engine"],
    }

    progress("fused vs split CFG, 8 requests")
    s = _median_seconds(
        {"fused": _engine_run(runtime, requests(8)), "split": _engine_run(SplitCFGRuntime(runtime), requests(8))},
        rounds,
    )
    results["fused_vs_split"] = {"images_per_s": {k: 8 / v for k, v in s.items()}, "ratio": s["split"] / s["fused"]}

    with tempfile.TemporaryDirectory() as scratch:
        progress("8 distinct LoRAs in one batch vs none vs diffusers swapping per request")
        files = _random_lora_files(settings.model_dir, Path(scratch), 8)
        loras = [load_adapter_file(f) for f in files]

        def with_loras() -> list[GenerationRequest]:
            return [
                GenerationRequest(prompts[i], seed=i, steps=steps, guidance_scale=GUIDANCE, adapters=((loras[i], 1.0),))
                for i in range(8)
            ]

        def diffusers_swap() -> None:
            for i, file in enumerate(files):
                pipe.load_lora_weights(str(file), adapter_name=f"l{i}")
                pipe(
                    prompts[i],
                    num_inference_steps=steps,
                    guidance_scale=GUIDANCE,
                    generator=torch.Generator().manual_seed(i),
                )
                pipe.unload_lora_weights()

        s = _median_seconds(
            {
                "eight_loras": _engine_run(runtime, with_loras),
                "eight_loras_banked": _engine_run(banked_only, with_loras),
                "no_adapters": _engine_run(runtime, requests(8)),
                "no_adapters_banked": _engine_run(banked_only, requests(8)),
                "diffusers_swap": diffusers_swap,
            },
            rounds,
        )
    rank = rank_bucket(LORA_RANK, runtime.info.lora_rank)  # what the LoRA calls' banks carried
    ours = lora_macs(pipe.unet, pipe.unet.config.sample_size, pipe.text_encoder.config.hidden_size, rank)
    results["lora_macs"] = {"rank": rank, "backbone": ours.summary(), "sd15": sd15_lora_macs(rank).summary()}
    results["loras"] = {
        "images_per_s": {k: 8 / v for k, v in s.items()},
        "vs_no_adapters": s["no_adapters"] / s["eight_loras"],
        "vs_no_adapters_banked": s["no_adapters_banked"] / s["eight_loras_banked"],
        "lora_graph_vs_banked_graph": s["eight_loras_banked"] / s["eight_loras"],
        "vs_diffusers_swap": s["diffusers_swap"] / s["eight_loras"],
    }

    progress("continuous vs request-level batching, 16 requests with mixed step counts")
    mixed = [steps // 2, steps, 2 * steps, steps // 2 * 3]

    def mixed_requests() -> list[GenerationRequest]:
        return [GenerationRequest(prompts[i], seed=i, steps=mixed[i % 4], guidance_scale=GUIDANCE) for i in range(16)]

    s = _median_seconds(
        {
            "continuous": _engine_run(runtime, mixed_requests, max_rows=16, max_active=8),
            "request_level": _request_level_run(runtime, mixed_requests, 8, max_rows=16, max_active=8),
        },
        rounds,
    )
    results["continuous_vs_request_level"] = {
        "images_per_s": {k: 16 / v for k, v in s.items()},
        "ratio": s["request_level"] / s["continuous"],
    }
    progress(f"guidance options: speed and judge quality on {settings.quality_samples} prompts")
    results["guidance_options"] = guidance_options(runtime, settings.quality_samples)
    return results


def markdown(results: dict, command: str) -> str:
    r = results
    lines = [
        "## Engine (`diffplex bench engine`)",
        "",
        f"Machine: {r['machine']}; runtime {r['runtime']}; DDIM {r['steps']} steps, guidance {GUIDANCE}; "
        f"median of {r['rounds']} interleaved rounds. Command: `{command}`.",
        "",
    ]
    rows = [
        ["engine vs diffusers pipeline, 1 request", f"{r['vs_diffusers_1']['ratio']:.2f}x", "≥ 1.5x"],
        [
            "engine vs diffusers pipeline, 8 concurrent requests (diffusers: one call per request)",
            f"{r['vs_diffusers_8']['ratio']:.2f}x",
            "≥ 2x",
        ],
        [
            "engine vs diffusers pipeline, the same 8 requests as one static batch (one call of 8 prompts)",
            f"{r['vs_diffusers_8']['ratio_vs_batched']:.2f}x",
            "",
        ],
        ["fused vs split CFG, 8 requests", f"{r['fused_vs_split']['ratio']:.2f}x", ""],
        [
            "8 distinct LoRAs in one batch vs no adapters (adapter-free base graphs)",
            f"{r['loras']['vs_no_adapters']:.2f}x",
            "≥ 0.85x",
        ],
        [
            "8 distinct LoRAs in one batch vs no adapters on the banked graphs (the cost of mixing adapters)",
            f"{r['loras']['vs_no_adapters_banked']:.2f}x" if "vs_no_adapters_banked" in r["loras"] else "-",
            "",
        ],
        [
            "8 distinct LoRAs in one batch: LoRA-only graphs vs the LoRA+VPT banked graphs",
            f"{r['loras']['lora_graph_vs_banked_graph']:.2f}x" if "lora_graph_vs_banked_graph" in r["loras"] else "-",
            "",
        ],
        [
            "8 distinct LoRAs in one batch vs diffusers swapping per request",
            f"{r['loras']['vs_diffusers_swap']:.2f}x",
            "≥ 3x",
        ],
        ["continuous vs request-level batching, mixed steps", f"{r['continuous_vs_request_level']['ratio']:.2f}x", ""],
    ]
    lines += [table(["comparison (throughput ratio)", "measured", "target"], rows), ""]
    if m := r.get("lora_macs"):
        share = {k: m[k]["lora_macs"] / m[k]["unet_macs"] for k in ("backbone", "sd15")}
        lines += [
            f"Rank-{m['rank']} banks on every LoRA target add {100 * share['backbone']:.1f}% to a U-Net row's "
            f"multiply-accumulates on this backbone ({m['backbone']['targets']} targets) and "
            f"{100 * share['sd15']:.1f}% on an SD-1.5-shaped U-Net at 512 px ({m['sd15']['targets']} targets; "
            "`service/bench/lora_macs.py`, counted, not timed).",
            "",
        ]
    g = r["guidance_options"]
    rows = [
        [
            name,
            f"{e['speedup']:.2f}x",
            f"{100 * e['unet_rows_saved']:.0f}%",
            f"{100 * e['prompt_accuracy']:.1f}%",
            f"{e['frechet_distance']:.1f}",
        ]
        for name, e in g.items()
    ]
    lines += [
        "Guidance options (25 steps, judge on the same prompts and seeds):",
        "",
        table(["option", "speed vs baseline", "U-Net rows saved", "prompt accuracy", "Fréchet distance"], rows),
    ]
    return "\n".join(lines)
