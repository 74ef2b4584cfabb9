"""`diffplex bench hotload`: from an adapter upload to its first image, cold and warm, through the real
service stack (HTTP, auth, store, adapter cache, engine) running in this process.

Per adapter, interleaved so machine noise hits all alike:
- upload: `PUT /v1/adapters/{name}` (parse + validate against the backbone + store write);
- cold use: the first generation naming it (store read, parse, cache insert, bank packing);
- warm use: the same request again (cache hit, packed bank reused);
- no adapter: the same request without it (the floor the adapter's cost is measured against).
The server's own cache counters confirm that every cold use missed and every warm use hit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from service.bench.adapter_files import lora_bytes
from service.bench.live_server import live_server
from service.bench.report import machine, table
from service.bench.server_metrics import metric_total

PROMPT = "a large red circle on a black background"


def _timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 201):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return elapsed


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    times: dict[str, list[float]] = {
        "upload": [],
        "cold_use": [],
        "warm_use": [],
        "no_adapter": [],
        "upload_to_image": [],
    }
    with (
        tempfile.TemporaryDirectory() as data,
        live_server(args.model, Path(data), args.backend, args.export, args.threads) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        assert server.state.model is not None
        spec = server.state.model.engine.info.spec
        tenant = server.create_tenant(client, "bench")
        body = {"prompt": PROMPT, "steps": args.steps, "seed": 0}
        before = client.get("/metrics").text
        for i in range(args.adapters):
            blob = lora_bytes(spec, seed=1000 + i, rank=args.rank)
            name = f"lora-{i}"
            upload = _timed(
                lambda d=blob, n=name: client.put(
                    f"/v1/adapters/{n}", files={"file": (f"{n}.safetensors", d)}, headers=tenant
                )
            )
            use = {**body, "adapters": [{"name": name}]}
            cold = _timed(lambda u=use: client.post("/v1/images/generations", json=u, headers=tenant))
            warm = _timed(lambda u=use: client.post("/v1/images/generations", json=u, headers=tenant))
            none = _timed(lambda: client.post("/v1/images/generations", json=body, headers=tenant))
            for key, value in (("upload", upload), ("cold_use", cold), ("warm_use", warm), ("no_adapter", none)):
                times[key].append(value)
            times["upload_to_image"].append(upload + cold)
            progress(
                f"adapter {i + 1}/{args.adapters}: upload {1000 * upload:.0f} ms, "
                f"cold {1000 * cold:.0f} ms, warm {1000 * warm:.0f} ms"
            )
        after = client.get("/metrics").text
        adapter_bytes = len(lora_bytes(spec, seed=0, rank=args.rank))
    counters = {
        name: metric_total(after, metric) - metric_total(before, metric)
        for name, metric in (
            ("cache_misses", "diffplex_adapter_cache_misses_total"),
            ("cache_hits", "diffplex_adapter_cache_hits_total"),
        )
    }
    stats = {k: _quantiles(v) for k, v in times.items()}
    return {
        "machine": machine(),
        "backend": args.backend,
        "adapters": args.adapters,
        "steps": args.steps,
        "rank": args.rank,
        "file_bytes": adapter_bytes,
        "counters": counters,
        "latency": stats,
        "cold_over_warm": stats["cold_use"]["p50_ms"] / stats["warm_use"]["p50_ms"],
        "warm_over_no_adapter": stats["warm_use"]["p50_ms"] / stats["no_adapter"]["p50_ms"],
        "hot_load_ms": stats["cold_use"]["p50_ms"] - stats["warm_use"]["p50_ms"],
    }


def markdown(r: dict, command: str) -> str:
    rows = [
        [label, f"{r['latency'][key]['p50_ms']:.0f}", f"{r['latency'][key]['p99_ms']:.0f}"]
        for key, label in (
            ("upload", "upload (`PUT /v1/adapters/{name}`)"),
            ("cold_use", "first use: generation naming the new adapter (cold)"),
            ("warm_use", "same request again (warm: cached, bank packed)"),
            ("no_adapter", "same request without an adapter"),
            ("upload_to_image", "upload to first image (upload + cold use)"),
        )
    ]
    c = r["counters"]
    return "\n".join(
        [
            "## Adapter hot-load (`diffplex bench hotload`)",
            "",
            f"Machine: {r['machine']}; backend {r['backend']}; {r['adapters']} distinct rank-{r['rank']} LoRAs "
            f"on every U-Net target ({r['file_bytes'] / 1024:.0f} KiB each), {r['steps']} steps, 1 image, one "
            f"request at a time through the in-process HTTP service. Command: `{command}`.",
            "",
            table(["what", "p50 ms", "p99 ms"], rows),
            "",
            f"Ratios (p50): cold / warm use **{r['cold_over_warm']:.2f}x** (hot-load cost {r['hot_load_ms']:.0f} ms); "
            f"warm use / no adapter **{r['warm_over_no_adapter']:.2f}x**. Server cache counters over the run: "
            f"{c['cache_misses']:.0f} misses, {c['cache_hits']:.0f} hits (one miss per adapter expected).",
        ]
    )
