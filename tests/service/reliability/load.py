"""Concurrent async clients for the overload tests: a closed-loop capacity measurement, then an open-loop
offer (Poisson arrivals at a fixed rate, answered or not) of synchronous generations and async jobs."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

REQUEST = {"prompt": "a red circle on a blue background", "steps": 2, "size": "16x16"}
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Outcome:
    kind: str  # "sync" or "job"
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    latency_s: float
    retry_after: str | None = None
    code: str | None = None
    job_id: str | None = None
    error: str | None = None


@dataclass
class Offered:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, *statuses: int) -> int:
        return sum(o.status in statuses for o in self.outcomes)

    def admitted_latencies(self) -> list[float]:
        return sorted(o.latency_s for o in self.outcomes if o.kind == "sync" and o.status == 200)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def async_client(url: str, key: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300, limits=limits)


async def send(client: httpx.AsyncClient, kind: str, body: dict | None = None) -> Outcome:
    started = time.perf_counter()
    path = "/v1/images/generations" if kind == "sync" else "/v1/jobs"
    try:
        response = await client.post(path, json=body or REQUEST)
    except httpx.HTTPError as error:
        return Outcome(kind, 0, time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    outcome = Outcome(kind, response.status_code, time.perf_counter() - started, response.headers.get("retry-after"))
    payload = response.json()
    if response.status_code >= 400:
        outcome.code = payload["error"]["code"]
    elif kind == "job":
        outcome.job_id = payload["id"]
    return outcome


async def capacity(url: str, key: str, seconds: float, concurrency: int) -> float:
    """Images per second with `concurrency` clients each sending the next request when one is answered."""
    done = 0
    async with async_client(url, key) as client:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                if (await send(client, "sync")).status == 200:
                    done += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def offer(url: str, key: str, rate: float, seconds: float, job_share: float, seed: int = 0) -> Offered:
    """Poisson arrivals at `rate` per second for `seconds`; a `job_share` of them are async jobs."""
    rng = random.Random(seed)
    result = Offered()
    async with async_client(url, key) as client:
        tasks = []
        started = time.perf_counter()
        at = 0.0
        while at < seconds:
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            kind = "job" if rng.random() < job_share else "sync"
            tasks.append(asyncio.create_task(send(client, kind)))
            at += rng.expovariate(rate)
        result.outcomes = list(await asyncio.gather(*tasks))
        result.seconds = time.perf_counter() - started
    return result


async def final_statuses(url: str, key: str, job_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Poll every job until it is terminal (or the time is up): id -> last status seen."""
    statuses = {job_id: "unknown" for job_id in job_ids}
    deadline = time.perf_counter() + timeout_s
    async with async_client(url, key) as client:
        pending = list(job_ids)
        while pending and time.perf_counter() < deadline:
            answers = await asyncio.gather(*(client.get(f"/v1/jobs/{job_id}") for job_id in pending))
            for job_id, response in zip(pending, answers, strict=True):
                if response.status_code == 200:
                    statuses[job_id] = response.json()["status"]
            pending = [j for j in pending if statuses[j] not in TERMINAL]
            if pending:
                await asyncio.sleep(0.25)
    return statuses
