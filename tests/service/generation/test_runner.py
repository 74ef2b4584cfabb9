"""How the runner counts the images that leave the engine (service/generation/runner.py): a cancel (a job's
DELETE, a client that left) is counted cancelled, not failed; the siblings of a failed image fail with it."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from service.core.metrics import IMAGE_OUTCOMES, Metrics
from service.engine import Cancelled, GenerationRequest, GenerationResult
from service.generation.runner import Batch


def ended(outcome: str) -> Future:
    future: Future = Future()
    if outcome == "ok":
        future.set_result(GenerationResult(np.zeros((16, 16, 3), np.uint8), 0, {}))
    elif outcome == "cancelled":
        future.set_exception(Cancelled("request r1 was cancelled"))
    elif outcome == "future cancelled":  # the awaiting caller cancelled the engine's future itself
        future.cancel()
    else:
        future.set_exception(RuntimeError("the U-Net failed"))
    return future


def counts(metrics: Metrics) -> dict[str, float]:
    sample = metrics.registry.get_sample_value
    return {o: sample("diffplex_images_total", {"status": o}) or 0.0 for o in IMAGE_OUTCOMES}


def batch_of(n: int, metrics: Metrics) -> Batch:
    metrics.waiting.inc(n)  # as Runner.submit counts them
    return Batch([GenerationRequest("a red circle", seed=i) for i in range(n)], metrics, None)


def test_images_are_counted_by_how_they_left_the_engine() -> None:
    metrics = Metrics()
    assert counts(metrics) == {"ok": 0, "failed": 0, "cancelled": 0}  # every series exists from the start
    batch = batch_of(4, metrics)
    for index, outcome in enumerate(("ok", "cancelled", "future cancelled", "failed")):
        batch.finished(index, ended(outcome))
    assert counts(metrics) == {"ok": 1, "failed": 1, "cancelled": 2}
    assert metrics.registry.get_sample_value("diffplex_requests_waiting") == 0


def test_the_images_cancelled_because_a_sibling_failed_count_as_failed() -> None:
    metrics = Metrics()
    batch = batch_of(3, metrics)
    batch.finished(0, ended("failed"))
    batch.failed = True  # Runner.wait, before it cancels the rest
    batch.finished(1, ended("cancelled"))
    batch.finished(2, ended("ok"))  # finished before the cancel landed
    assert counts(metrics) == {"ok": 1, "failed": 2, "cancelled": 0}
