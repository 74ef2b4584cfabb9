"""Hands planned requests to the engine (its own thread) and follows them from the event loop.

One `Batch` is the n images of one API request: submitted together (all or none: a full queue or a tenant
at its work cap refuses the whole request), awaited with `asyncio.wrap_future`, cancelled together when the
client goes away, with their progress summed for jobs and SSE.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from service.core.metrics import Metrics
from service.engine import Cancelled, Engine, GenerationRequest, GenerationResult, Job

ProgressCallback = Callable[[int, int], None]  # (steps done, steps total) over the whole batch


class Batch:
    def __init__(self, requests: list[GenerationRequest], metrics: Metrics, on_progress: ProgressCallback | None):
        self.requests = requests
        self.metrics = metrics
        self.on_progress = on_progress
        self.jobs: list[Job] = []
        self._steps = [0] * len(requests)
        self._totals = [0] * len(requests)
        self._started = [False] * len(requests)
        self._lock = threading.Lock()
        # set before the rest is cancelled because one image failed: those count as failed, not cancelled
        self.failed = False

    def progress_of(self, index: int) -> Callable[[int, int], None]:
        """Called on the engine thread after every step of request `index`: keep it short."""

        def progress(step: int, total: int) -> None:
            with self._lock:
                if not self._started[index]:
                    self._started[index] = True
                    self.metrics.waiting.dec()
                    self.metrics.active.inc()
                self._steps[index], self._totals[index] = step, total
                done, overall = sum(self._steps), self.total_steps()
            if self.on_progress is not None:
                self.on_progress(done, overall)

        return progress

    def total_steps(self) -> int:
        """Known totals, and the requested steps for requests not admitted yet (img2img runs fewer)."""
        return sum(t or r.steps for t, r in zip(self._totals, self.requests, strict=True))

    def finished(self, index: int, future: Future) -> None:
        with self._lock:
            (self.metrics.active if self._started[index] else self.metrics.waiting).dec()
        if future.cancelled() or isinstance(future.exception(), Cancelled):
            # a job's DELETE, a client that left, a job lost or dropped: cancelled, unless a sibling failed
            self.metrics.images.labels("failed" if self.failed else "cancelled").inc()
            return
        if future.exception() is not None:
            self.metrics.images.labels("failed").inc()
            return
        result: GenerationResult = future.result()
        self.metrics.images.labels("ok").inc()
        self.metrics.queue_time.observe(result.timings.get("queue_s", 0.0))
        self.metrics.generation_time.observe(result.timings.get("total_s", 0.0))

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()


class Runner:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def submit(
        self, requests: list[GenerationRequest], on_progress: ProgressCallback | None = None, capped: bool = True
    ) -> Batch:
        """Queue the batch as a whole: QueueFull or TenantBusy (its tenant's work cap, checked for all n images
        together) refuse it before any image is queued. `capped=False`: work accepted earlier (a stored job run
        again) is queued even over the cap, since refusing it would fail a job the client was told is accepted."""
        batch = Batch(requests, self.metrics, on_progress)
        self.metrics.waiting.inc(len(requests))  # before submit: the engine thread may report progress at once
        try:
            batch.jobs = self.engine.submit_all(requests, [batch.progress_of(i) for i in range(len(requests))], capped)
        except BaseException:
            self.metrics.waiting.dec(len(requests))
            raise
        for index, job in enumerate(batch.jobs):
            job.future.add_done_callback(lambda f, i=index: batch.finished(i, f))
        return batch

    async def wait(self, batch: Batch) -> list[GenerationResult]:
        """All results in request order; the first failure fails the batch (and cancels the rest)."""
        # shield: cancelling the await must not cancel the engine's futures themselves (the engine resolves
        # them, and counts them, when it drops the rows); cancellation goes through `Job.cancel` below.
        waits = [asyncio.shield(asyncio.wrap_future(j.future)) for j in batch.jobs]
        try:
            return list(await asyncio.gather(*waits))
        except Cancelled:  # the request was cancelled (its rows are leaving already)
            batch.cancel()
            raise
        except Exception:  # one image failed: the others are cancelled for it, and count as failed too
            batch.failed = True
            batch.cancel()
            raise
        except BaseException:  # the awaiting task was cancelled (the client went away): free the engine rows
            batch.cancel()
            raise
