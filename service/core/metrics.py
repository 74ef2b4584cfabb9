"""Prometheus metrics (`diffplex_` prefix), one registry per app so several apps in one process (tests) do
not collide in the global one.

Every label value comes from a closed set written in the code (route templates, "cfg" / "plain" and their
"_shallow" forms, the image outcomes of IMAGE_OUTCOMES...), never from what a client sends: each distinct value is
a new series kept for the process's life, so a client-chosen one (an HTTP method, a path) would let anyone grow
`/metrics` without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
ROW_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
# How an image left the engine: made; failed (its request failed, its siblings with it); cancelled (a job's
# DELETE, a synchronous request whose client left, a run dropped because its job or tenant went away).
IMAGE_OUTCOMES = ("ok", "failed", "cancelled")


def method_label(method: str) -> str:
    """The request's method, or "other": HTTP lets a client send any token as a method."""
    return method if method in METHODS else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "diffplex_request_latency_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "diffplex_queue_time_seconds",
            "time an image request waited before the engine admitted it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generation_time = Histogram(
            "diffplex_generation_seconds",
            "engine time per image, submission to decoded image",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.unet_rows = Histogram(
            "diffplex_unet_rows_per_call",
            "U-Net rows per call (a guided row counts 2): how full the shared batches are",
            ["graph"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.active = Gauge("diffplex_requests_active", "image requests being denoised", registry=r)
        self.waiting = Gauge("diffplex_requests_waiting", "image requests queued, not yet admitted", registry=r)
        self.images = Counter(
            "diffplex_images_total",
            "images that left the engine, by outcome: ok, failed, cancelled",
            ["status"],
            registry=r,
        )
        for outcome in IMAGE_OUTCOMES:  # every series exists from the start, so a rate over it never lacks one
            self.images.labels(outcome)
        self.cache_hits = Counter("diffplex_adapter_cache_hits_total", "parsed adapters found in the cache", registry=r)
        self.cache_misses = Counter("diffplex_adapter_cache_misses_total", "adapters not in the cache", registry=r)
        self.cache_loads = Counter(
            "diffplex_adapter_cache_loads_total", "adapter loads from the store", ["result"], registry=r
        )
        self.cache_bytes = Gauge("diffplex_adapter_cache_bytes", "bytes of parsed adapters held", registry=r)
        self.cache_evictions = Counter(
            "diffplex_adapter_cache_evictions_total", "adapters dropped", ["reason"], registry=r
        )
        self.packed_cache_bytes = Gauge(
            "diffplex_packed_cache_bytes",
            "bytes of packed adapter tensors the engine keeps between batches (rows per set, banks per batch)",
            ["cache"],
            registry=r,
        )
        self.uncond_cache_bytes = Gauge(
            "diffplex_uncond_cache_bytes",
            "bytes of unconditional embeddings cached per (negative prompt, text-side adapter set)",
            registry=r,
        )
        self.rate_limited = Counter(
            "diffplex_rate_limited_total", "requests refused by a per-tenant rate limit", registry=r
        )
        self.http_refused = Counter(
            "diffplex_http_refused_total",
            "requests the HTTP layer refused on their headers or while their body arrived, by status "
            "(401/403: key, 408: too slow, 413: too large, 429: uploads)",
            ["status"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
