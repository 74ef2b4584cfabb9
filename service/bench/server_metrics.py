"""The server's own counters, scraped from `/metrics` before and after a level: U-Net rows actually run
(a guided row counts 2) and images finished, as the engine saw them.

Behind a load balancer each scrape reaches one replica: run against one replica, or read these
counters from Prometheus instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

UNET_ROWS = "diffplex_unet_rows_per_call_sum"  # the histogram's sum: every row of every call
IMAGES = "diffplex_images_total"


@dataclass(frozen=True)
class Counters:
    unet_rows: float
    images_ok: float


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample called `name` (whose labels include `labels`) in a Prometheus exposition."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def parse_counters(text: str) -> Counters:
    return Counters(metric_total(text, UNET_ROWS), metric_total(text, IMAGES, status="ok"))


async def scrape(client: httpx.AsyncClient) -> Counters | None:
    """None when the server exposes no metrics here (the figures that need them are then left empty)."""
    try:
        response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return parse_counters(response.text)
    except ValueError:
        return None
