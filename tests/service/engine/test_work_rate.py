"""The throughput a Retry-After is estimated from: busy time only, over a window of recent ticks."""

from __future__ import annotations

import pytest

from service.engine.work_rate import WorkRate


def test_no_estimate_before_any_busy_time() -> None:
    rate = WorkRate()
    assert rate.per_s() is None
    rate.add(0, 0.0)
    assert rate.per_s() is None


def test_work_over_busy_seconds_of_the_last_ticks() -> None:
    rate = WorkRate(ticks=2)
    rate.add(100, 1.0)  # falls out of the window below
    rate.add(4, 1.0)
    rate.add(8, 1.0)
    assert rate.per_s() == pytest.approx(6.0)
