"""Open-loop arrival processes: when requests are sent, decided in advance and independent of the answers.

Poisson arrivals have exponential gaps (coefficient of variation 1). Bursty traffic uses gamma gaps with
the same mean and a chosen CV: shape k = 1 / CV^2, scale = 1 / (rate * k); CV > 1 clusters arrivals into
bursts, CV < 1 spaces them more evenly, CV = 1 is Poisson again.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Process = Literal["poisson", "gamma"]


def gaps(
    rate: float, count: int, rng: np.random.Generator, process: Process = "poisson", cv: float = 1.0
) -> np.ndarray:
    """`count` inter-arrival times (seconds) with mean 1 / rate."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, not {rate}")
    if process == "poisson":
        return rng.exponential(1.0 / rate, count)
    if cv <= 0:
        raise ValueError(f"the gamma process needs a CV > 0, not {cv}")
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate * shape), count)


def arrival_times(
    rate: float, duration_s: float, rng: np.random.Generator, process: Process = "poisson", cv: float = 1.0
) -> np.ndarray:
    """Send times in [0, duration_s), drawn in chunks until the window is covered."""
    times: list[np.ndarray] = []
    now = 0.0
    chunk = max(16, int(rate * duration_s * 1.5))
    while now < duration_s:
        t = now + np.cumsum(gaps(rate, chunk, rng, process, cv))
        times.append(t)
        now = float(t[-1])
    out = np.concatenate(times)
    return out[out < duration_s]
