"""The figures of one load level, from the samples the client recorded: pure functions on known inputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTILES = (50, 90, 99)


@dataclass
class Sample:
    """One request as the client saw it."""

    tenant: str
    entry: str
    sent_s: float  # when it was sent, seconds after the level started
    latency_s: float  # until the whole answer was read (or the failure)
    status: int | None  # HTTP status; None when no answer came (connection error, timeout)
    images: int = 0  # images received
    error: str | None = None  # the server's message or the transport error
    timings: list[dict[str, float]] = field(default_factory=list)  # the server's per-image `timings`

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


def percentiles(values: Sequence[float], qs: Sequence[int] = QUANTILES, scale: float = 1000.0) -> dict[str, Any]:
    """p50/p90/p99 (linear interpolation between order statistics) and the mean, in ms by default."""
    if not values:
        return {f"p{q}": None for q in qs} | {"mean": None}
    array = np.asarray(values, dtype=float) * scale
    out = {f"p{q}": float(np.percentile(array, q)) for q in qs}
    out["mean"] = float(array.mean())
    return out


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one gets everything."""
    array = np.asarray(values, dtype=float)
    if array.size == 0 or not np.any(array):
        return None
    return float(array.sum() ** 2 / (array.size * np.square(array).sum()))


def goodput(samples: Sequence[Sample], wall_s: float, slo_s: float) -> dict[str, float]:
    """Requests (and their images) answered successfully within the end-to-end SLO, per second."""
    good = [s for s in samples if s.ok and s.latency_s <= slo_s]
    return {
        "requests_per_s": len(good) / wall_s if wall_s > 0 else 0.0,
        "images_per_s": sum(s.images for s in good) / wall_s if wall_s > 0 else 0.0,
        "slo_attainment": len(good) / len(samples) if samples else 0.0,
    }


def error_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Failures by HTTP status, or by what went wrong when there is no status to show (transport, bad body)."""
    failed = [s for s in samples if not s.ok]
    return dict(Counter((s.error or "no answer") if s.status in (None, 200) else str(s.status) for s in failed))


def time_split(samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    """Queue vs compute from the server's per-image timings, and what the client waited beyond both
    (HTTP, PNG encoding, base64, the network): latency minus the slowest image's server total."""
    queue, compute, overhead = [], [], []
    for s in samples:
        if not s.ok or not s.timings:
            continue
        for t in s.timings:
            queue.append(t.get("queue_s", 0.0))
            compute.append(t.get("total_s", 0.0) - t.get("queue_s", 0.0))
        overhead.append(max(0.0, s.latency_s - max(t.get("total_s", 0.0) for t in s.timings)))
    return {"queue_ms": percentiles(queue), "compute_ms": percentiles(compute), "overhead_ms": percentiles(overhead)}


def per_tenant(samples: Sequence[Sample], tenants: Sequence[str], wall_s: float) -> dict[str, dict[str, Any]]:
    out = {}
    for tenant in tenants:
        mine = [s for s in samples if s.tenant == tenant]
        ok = [s for s in mine if s.ok]
        latency = percentiles([s.latency_s for s in ok])
        out[tenant] = {
            "sent": len(mine),
            "ok": len(ok),
            "images": sum(s.images for s in ok),
            "images_per_s": sum(s.images for s in ok) / wall_s if wall_s > 0 else 0.0,
            "p50_ms": latency["p50"],
            "p99_ms": latency["p99"],
        }
    return out


def summarise(
    samples: Sequence[Sample],
    *,
    mode: str,
    offered: float,
    duration_s: float,
    wall_s: float,
    slo_s: float,
    weights: dict[str, float],
    unet_rows: float | None = None,
) -> dict[str, Any]:
    """Everything the report shows for one level. `wall_s` runs from the first send to the last answer."""
    ok = [s for s in samples if s.ok]
    images = sum(s.images for s in ok)
    tenants = per_tenant(samples, list(weights), wall_s)
    throughput = [tenants[t]["images_per_s"] for t in weights]
    return {
        "mode": mode,
        "offered": offered,
        "duration_s": duration_s,
        "wall_s": wall_s,
        "sent": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "errors": error_counts(samples),
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "images": images,
        "images_per_s": images / wall_s if wall_s > 0 else 0.0,
        "unet_rows": unet_rows,
        "unet_rows_per_s": unet_rows / wall_s if unet_rows is not None and wall_s > 0 else None,
        "latency_ms": percentiles([s.latency_s for s in ok]),
        **time_split(samples),
        "goodput": goodput(samples, wall_s, slo_s),
        "tenants": tenants,
        # Raw: equal shares are fair. Weighted: throughput / weight, fair when each tenant gets its share.
        "jain": jain_index(throughput),
        "jain_weighted": jain_index([x / weights[t] for x, t in zip(throughput, weights, strict=True)]),
    }
