"""One load level: open loop (arrivals at a rate, whatever the answers) or closed loop (N users, each
sending its next request when the last one is answered), with a live line in the terminal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
from rich.progress import Progress, TaskID

from service.loadtest.arrivals import Process, arrival_times
from service.loadtest.client import generate
from service.loadtest.mix import Draw, RequestMix
from service.loadtest.stats import Sample

TICK_S = 0.25


@dataclass
class Recorder:
    """Samples of the running level, and the live progress line they feed."""

    progress: Progress
    task: TaskID
    samples: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def refresh(self, completed: float) -> None:
        ok = [s.latency_s for s in self.samples if s.ok]
        p50 = f"{1000 * float(np.median(ok)):.0f} ms" if ok else "-"
        failed = len(self.samples) - len(ok)
        self.progress.update(self.task, completed=completed, stats=f"ok {len(ok)}  failed {failed}  p50 {p50}")


@dataclass
class LevelRun:
    samples: list[Sample]
    wall_s: float  # first send to last answer (at least the level's duration)
    max_lag_s: float = 0.0  # how late the client sent its latest request (open loop): > 0.1 s means it fell behind


async def _ticking(recorder: Recorder, completed: Callable[[], float], work: asyncio.Future) -> None:
    while not work.done():
        recorder.refresh(completed())
        await asyncio.wait({work}, timeout=TICK_S)
    recorder.refresh(completed())


def _wall(samples: list[Sample], duration_s: float) -> float:
    return max([duration_s, *(s.sent_s + s.latency_s for s in samples)])


async def open_loop(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    mix: RequestMix,
    rate: float,
    duration_s: float,
    rng: np.random.Generator,
    recorder: Recorder,
    process: Process = "poisson",
    cv: float = 1.0,
) -> LevelRun:
    times = arrival_times(rate, duration_s, rng, process, cv)
    draws: list[Draw] = [mix.draw() for _ in times]  # drawn up front: the sequence does not depend on timing
    recorder.progress.update(recorder.task, total=len(times))
    start = time.perf_counter()
    lag = 0.0

    async def send(draw: Draw) -> None:
        recorder.add(await generate(client, keys[draw.tenant], draw, start))

    async def schedule() -> None:
        nonlocal lag
        tasks = []
        for at, draw in zip(times, draws, strict=True):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            tasks.append(asyncio.create_task(send(draw)))
        await asyncio.gather(*tasks)

    work = asyncio.ensure_future(schedule())
    await _ticking(recorder, lambda: len(recorder.samples), work)
    await work
    return LevelRun(recorder.samples, _wall(recorder.samples, duration_s), lag)


async def closed_loop(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    mix: RequestMix,
    users: int,
    duration_s: float,
    recorder: Recorder,
) -> LevelRun:
    recorder.progress.update(recorder.task, total=duration_s)
    start = time.perf_counter()
    end = start + duration_s

    async def user() -> None:
        while time.perf_counter() < end:
            draw = mix.draw()
            recorder.add(await generate(client, keys[draw.tenant], draw, start))

    work = asyncio.ensure_future(asyncio.gather(*(user() for _ in range(users))))
    await _ticking(recorder, lambda: min(duration_s, time.perf_counter() - start), work)
    await work
    samples = recorder.samples
    return LevelRun(samples, max([0.0, *(s.sent_s + s.latency_s for s in samples)]) or duration_s)
