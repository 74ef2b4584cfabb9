from __future__ import annotations

from service.bench.server_metrics import parse_counters
from service.core.metrics import Metrics


def test_counters_from_the_servers_own_exposition() -> None:
    metrics = Metrics()
    for rows in (8, 16, 4):
        metrics.unet_rows.labels("cfg").observe(rows)
    metrics.unet_rows.labels("plain").observe(3)
    metrics.images.labels("ok").inc(5)
    metrics.images.labels("failed").inc(2)
    counters = parse_counters(metrics.render().decode())
    assert counters.unet_rows == 31
    assert counters.images_ok == 5
