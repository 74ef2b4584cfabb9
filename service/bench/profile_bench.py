"""`diffplex bench profile`: where one request's time goes, stage by stage.

In-process engine, one request at a time, with every graph call timed (text encoder, U-Net, VAE decode);
what the engine spends outside the graphs (schedulers, per-row tensors, bank packing) is the rest of its
own total. PNG encoding is timed on the images. Then the same requests over HTTP to the real service
running in this process: the latency beyond the server's own per-image total is HTTP (routing, JSON,
base64, the socket) plus PNG encoding. `--cprofile N` adds the N functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.bench.live_server import live_server
from service.bench.report import machine, table
from service.engine import Engine, GenerationRequest
from service.generation.images import encode_png
from service.runtime import load_runtime
from service.runtime.base import Runtime

PROMPT = "a large solid red diamond in the top left on a gray background"


class TimingRuntime:
    """Stands in for the real runtime (every attribute is the inner one's) and adds up the wall time of
    each graph call; a proxy rather than a subclass, so it follows the Runtime interface as it changes."""

    GRAPHS = {
        "encode_text": "text_encoder",
        "unet_cfg": "unet",
        "unet": "unet",
        "vae_encode": "vae_encode",
        "vae_decode": "vae_decode",
    }

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = defaultdict(float)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        graph = self.GRAPHS.get(name)
        if graph is None:
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds[graph] += time.perf_counter() - started

        return timed


def _engine_path(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    runtime = TimingRuntime(
        load_runtime(args.backend, args.model, args.export, threads=args.threads)  # type: ignore[arg-type]
    )
    engine = Engine(runtime)  # type: ignore[arg-type]  # duck-typed Runtime
    engine.submit(GenerationRequest(PROMPT, seed=0, steps=args.steps))  # the warm-up, not timed
    engine.run_until_idle()
    runtime.seconds.clear()
    profiler = cProfile.Profile() if args.cprofile else None
    totals, png = [], []
    for i in range(args.requests):
        job = engine.submit(GenerationRequest(PROMPT, seed=i, steps=args.steps))
        if profiler:
            profiler.enable()
        engine.run_until_idle()
        if profiler:
            profiler.disable()
        result = job.result(timeout=0)
        totals.append(result.timings["total_s"])
        started = time.perf_counter()
        encode_png(result.image)
        png.append(time.perf_counter() - started)
    progress(f"engine path: {1000 * np.mean(totals):.0f} ms per request")
    n = args.requests
    stages = {k: v / n for k, v in runtime.seconds.items()}
    out = {"engine_total_s": float(np.mean(totals)), "graphs_s": stages, "png_s": float(np.mean(png))}
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("tottime")
        out["top_functions"] = [
            {"function": f"{Path(file).name}:{line}({name})", "tottime_s": tt / n, "calls": nc // n}
            for (file, line, name), (_, nc, tt, _, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[
                : args.cprofile
            ]
        ]
    return out


def _http_path(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    with (
        tempfile.TemporaryDirectory() as data,
        live_server(args.model, Path(data), args.backend, args.export, args.threads) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        headers = server.create_tenant(client, "profile")
        latency, server_total = [], []
        for i in range(args.requests + 1):
            started = time.perf_counter()
            response = client.post(
                "/v1/images/generations", json={"prompt": PROMPT, "steps": args.steps, "seed": i}, headers=headers
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i:  # the first is the warm-up
                latency.append(elapsed)
                server_total.append(response.json()["data"][0]["timings"]["total_s"])
    progress(f"HTTP path: {1000 * np.mean(latency):.0f} ms per request")
    return {"latency_s": float(np.mean(latency)), "server_total_s": float(np.mean(server_total))}


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    engine = _engine_path(args, progress)
    http = _http_path(args, progress)
    graphs = engine["graphs_s"]
    stages = {
        "text encoder": graphs.get("text_encoder", 0.0),
        "U-Net": graphs.get("unet", 0.0),
        "VAE decode": graphs.get("vae_decode", 0.0),
        "engine host work (schedulers, tensors, banks)": engine["engine_total_s"] - sum(graphs.values()),
        "PNG encoding": engine["png_s"],
        "HTTP (routing, auth, JSON, base64, socket)": max(
            0.0, http["latency_s"] - http["server_total_s"] - engine["png_s"]
        ),
    }
    return {
        "machine": machine(),
        "backend": args.backend,
        "steps": args.steps,
        "requests": args.requests,
        "engine": engine,
        "http": http,
        "stages_s": stages,
    }


def markdown(r: dict, command: str) -> str:
    total = sum(r["stages_s"].values())
    rows = [[name, f"{1000 * s:.1f}", f"{100 * s / total:.1f}%"] for name, s in r["stages_s"].items()]
    lines = [
        "## Where the time goes (`diffplex bench profile`)",
        "",
        f"Machine: {r['machine']}; backend {r['backend']}; one request at a time, {r['steps']} DDIM steps, guidance "
        f"5, mean of {r['requests']} requests. Engine stages from timed graph calls in-process; HTTP = latency "
        f"through the in-process uvicorn service ({1000 * r['http']['latency_s']:.0f} ms) minus the server's own "
        f"time ({1000 * r['http']['server_total_s']:.0f} ms) minus PNG encoding. Command: `{command}`.",
        "",
        table(["stage", "ms per request", "share"], rows),
    ]
    if top := r["engine"].get("top_functions"):
        lines += ["", "Top functions by own time (cProfile, per request):", ""]
        lines += [
            table(
                ["function", "ms", "calls"], [[f["function"], f"{1000 * f['tottime_s']:.1f}", f["calls"]] for f in top]
            )
        ]
    return "\n".join(lines)
