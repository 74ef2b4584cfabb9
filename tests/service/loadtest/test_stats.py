"""Report maths on known inputs."""

from __future__ import annotations

import pytest

from service.loadtest import Sample, goodput, jain_index, percentiles, summarise
from service.loadtest.stats import time_split


def test_percentiles_interpolate_linearly() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    p = percentiles(values)
    assert p["p50"] == pytest.approx(50.5)
    assert p["p90"] == pytest.approx(90.1)
    assert p["p99"] == pytest.approx(99.01)
    assert p["mean"] == pytest.approx(50.5)
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "mean": None}


def test_jain_index() -> None:
    assert jain_index([2.0, 2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain_index([1.0, 2.0, 3.0]) == pytest.approx(36 / 42)
    assert jain_index([]) is None and jain_index([0.0, 0.0]) is None


def _sample(tenant: str, latency: float, status: int | None = 200, images: int = 1, **kw: object) -> Sample:
    return Sample(tenant, "e", 0.0, latency, status, images if status == 200 else 0, **kw)  # type: ignore[arg-type]


def test_goodput_counts_successes_within_the_slo() -> None:
    samples = [_sample("a", 0.5), _sample("a", 1.5, images=2), _sample("b", 0.9), _sample("b", 0.1, status=429)]
    g = goodput(samples, wall_s=2.0, slo_s=1.0)
    assert g == {"requests_per_s": 1.0, "images_per_s": 1.0, "slo_attainment": 0.5}


def test_time_split_uses_the_server_timings() -> None:
    timings = [{"queue_s": 0.2, "total_s": 1.0}, {"queue_s": 0.4, "total_s": 1.5}]
    split = time_split([_sample("a", 2.0, images=2, timings=timings)])
    assert split["queue_ms"]["mean"] == pytest.approx(300)
    assert split["compute_ms"]["mean"] == pytest.approx(950)  # (0.8 + 1.1) / 2
    assert split["overhead_ms"]["mean"] == pytest.approx(500)  # 2.0 - the slowest image's 1.5


def test_summarise_adds_up_and_weighs_fairness() -> None:
    samples = [_sample("a", 1.0) for _ in range(6)] + [_sample("b", 2.0) for _ in range(2)]
    samples += [_sample("b", 0.0, status=None, error="ReadTimeout"), _sample("a", 0.1, status=401, error="bad key")]
    s = summarise(
        samples,
        mode="open",
        offered=2.0,
        duration_s=4.0,
        wall_s=4.0,
        slo_s=1.5,
        weights={"a": 3.0, "b": 1.0},
        unet_rows=80,
    )
    assert (s["sent"], s["ok"], s["failed"], s["images"]) == (10, 8, 2, 8)
    assert s["errors"] == {"ReadTimeout": 1, "401": 1}
    assert s["images_per_s"] == 2.0 and s["unet_rows_per_s"] == 20.0
    assert sum(t["sent"] for t in s["tenants"].values()) == s["sent"]
    assert s["tenants"]["a"]["images_per_s"] == 1.5 and s["tenants"]["b"]["images_per_s"] == 0.5
    assert s["jain"] == pytest.approx(4 / (2 * 2.5))  # raw: 1.5 vs 0.5
    assert s["jain_weighted"] == pytest.approx(1.0)  # 1.5 / 3 == 0.5 / 1: each got its share
    assert s["goodput"]["requests_per_s"] == 1.5  # the 6 answers of 1.0 s; b's 2.0 s miss the SLO
