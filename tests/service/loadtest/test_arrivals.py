"""Arrival processes: mean rate and burstiness (CV) of seeded draws, within statistical tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from service.loadtest import arrival_times, gaps

N = 200_000  # relative standard error of the mean ~ CV / sqrt(N): 0.2% at CV 1


@pytest.mark.parametrize(("process", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 1.0), ("gamma", 3.0)])
def test_gaps_have_the_mean_rate_and_cv(process: str, cv: float) -> None:
    rate = 4.0
    sample = gaps(rate, N, np.random.default_rng(0), process, cv)  # type: ignore[arg-type]
    assert abs(sample.mean() * rate - 1) < 0.02
    assert abs(sample.std() / sample.mean() - cv) / cv < 0.03
    assert (sample > 0).all()


def test_arrival_times_cover_the_window_at_the_rate() -> None:
    rng = np.random.default_rng(1)
    counts = [len(arrival_times(10.0, 100.0, rng)) for _ in range(50)]
    assert abs(np.mean(counts) / 1000 - 1) < 0.01  # 50 windows x 1000 expected arrivals
    times = arrival_times(10.0, 100.0, np.random.default_rng(2), "gamma", 2.0)
    assert times.min() >= 0 and times.max() < 100.0 and (np.diff(times) >= 0).all()


def test_a_seed_gives_the_same_arrivals() -> None:
    a = arrival_times(2.0, 60.0, np.random.default_rng(5), "gamma", 2.0)
    b = arrival_times(2.0, 60.0, np.random.default_rng(5), "gamma", 2.0)
    c = arrival_times(2.0, 60.0, np.random.default_rng(6), "gamma", 2.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bursty_arrivals_cluster() -> None:
    """Counts per 1 s window vary more under CV 3 than under Poisson (index of dispersion > 1)."""
    windows = np.arange(0, 2001)

    def dispersion(process: str, cv: float) -> float:
        times = arrival_times(5.0, 2000.0, np.random.default_rng(3), process, cv)  # type: ignore[arg-type]
        counts = np.histogram(times, windows)[0]
        return float(counts.var() / counts.mean())

    assert abs(dispersion("poisson", 1.0) - 1) < 0.15
    assert dispersion("gamma", 3.0) > 3


@pytest.mark.parametrize(("rate", "cv"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)])
def test_invalid_parameters(rate: float, cv: float) -> None:
    with pytest.raises(ValueError):
        gaps(rate, 10, np.random.default_rng(0), "gamma", cv)
