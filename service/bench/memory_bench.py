"""`diffplex bench memory`: a replica's resident memory with 0, 100 and 1000 hosted adapters, each
registered in the store (as an upload would: parsed, validated, written) and loaded into the adapter cache.

Each cache budget runs in a fresh child process, because memory a process has freed is seldom given back
to the OS: measuring two configurations in one process would measure the first one's high-water mark.
The default budget (`DIFFPLEX_ADAPTER_CACHE_BYTES`) holds them all; the small one shows the byte-bounded
LRU at work: held bytes stay under the budget, older adapters are evicted, memory stops growing.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

from adapters import ExportLimits
from service.bench.adapter_files import load_spec, lora_bytes
from service.bench.report import machine, table
from service.bench.server_metrics import metric_total
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.hotload.cache import AdapterCache
from service.hotload.upload import inspect_upload
from service.stores.base import Quota
from service.stores.local import LocalStore

MiB = 1 << 20
PER_TENANT = 100  # adapters per tenant, as the default per-tenant quota allows


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), else the peak (getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(model_dir: Path, counts: list[int], rank: int, cache_bytes: int) -> list[dict]:
    """In a child process: register and load adapters up to each count, recording RSS and the cache."""
    settings = Settings()
    spec = load_spec(model_dir)
    limits = ExportLimits(max_lora_rank=max(rank, settings.engine.lora_rank), max_vpt_tokens=settings.engine.vpt_tokens)
    quota = Quota(max_count=PER_TENANT, max_bytes=settings.limits.max_adapter_bytes_per_tenant)
    metrics = Metrics()
    points = []
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root))
        cache = AdapterCache(store, spec, limits, cache_bytes, metrics)
        registered, file_bytes = 0, 0
        for target in [0, *counts]:
            while registered < target:
                tenant = f"tenant{registered // PER_TENANT}"
                if registered % PER_TENANT == 0:
                    store.create_tenant(tenant)
                data = lora_bytes(spec, seed=registered, rank=rank)
                meta = inspect_upload(
                    data, f"lora-{registered}", "lora", None, spec, limits, settings.limits.max_adapter_upload_bytes
                )
                store.put_adapter(tenant, meta, data, quota)
                cache.get(tenant, meta)
                registered, file_bytes = registered + 1, file_bytes + len(data)
            gc.collect()
            evicted = metric_total(metrics.render().decode(), "diffplex_adapter_cache_evictions_total")
            points.append(
                {
                    "adapters": target,
                    "rss_bytes": rss_bytes(),
                    "cache_bytes": cache.bytes,
                    "cached": target - int(evicted),
                    "evicted": int(evicted),
                    "file_bytes": file_bytes,
                }
            )
        cache.close()
    return points


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    counts = sorted(int(c) for c in args.counts.split(","))
    budgets = {"default": Settings().adapter_cache_bytes, "bounded": int(args.bounded_mib * MiB)}
    results: dict = {"machine": machine(), "rank": args.rank, "budgets": budgets, "runs": {}}
    context = multiprocessing.get_context("spawn")
    for name, budget in budgets.items():
        progress(f"cache budget {name} ({budget / MiB:.0f} MiB): adapters {counts}")
        with context.Pool(1) as pool:
            points = pool.apply(measure, (args.model, counts, args.rank, budget))
        base = points[0]["rss_bytes"]
        for point in points[1:]:
            point["rss_per_adapter_bytes"] = (point["rss_bytes"] - base) / point["adapters"]
        results["runs"][name] = points
    return results


def markdown(r: dict, command: str) -> str:
    rows = []
    for name, points in r["runs"].items():
        budget = r["budgets"][name] / MiB
        for p in points:
            per = p.get("rss_per_adapter_bytes")
            rows.append(
                [
                    f"{name} ({budget:.0f} MiB)",
                    p["adapters"],
                    f"{p['rss_bytes'] / MiB:.0f}",
                    "-" if per is None else f"{per / 1024:.0f}",
                    f"{p['cache_bytes'] / MiB:.1f}",
                    p["cached"],
                    p["evicted"],
                    f"{p['file_bytes'] / MiB:.1f}",
                ]
            )
    header = ["cache budget", "adapters", "RSS MiB", "RSS KiB / adapter", "cache MiB", "cached", "evicted", "files MiB"]
    return "\n".join(
        [
            "## Memory per hosted adapter (`diffplex bench memory`)",
            "",
            f"Machine: {r['machine']}. Rank-{r['rank']} LoRAs on every U-Net target, registered in a LocalStore "
            "(parsed, validated, written) and loaded into the adapter cache; RSS of a fresh process per budget, which "
            f"holds the backbone's modules for the spec. Command: `{command}`.",
            "",
            table(header, rows),
        ]
    )
