"""Fair admission against a real server: tenant A floods `POST /v1/jobs` with the largest jobs the limits
allow, open loop, ignoring every refusal, while tenant B sends small synchronous generations one after the
other. B's latency must stay within a small multiple of its latency on the idle server (measured in the same
run, before the attack and after A's jobs have finished, so a machine shared with other work is compared with
itself); A must be refused with 429 `tenant_busy`, a Retry-After and a message saying what to do once
over its work cap; every job A got accepted (202) must succeed; and `/livez`, probed every 0.1 s throughout,
must answer within 100 ms (99% of the probes; every one within 1 s: on two CPU cores shared with other test
runs, one probe in a hundred is sometimes held 100-110 ms by the machine, with or without the defence).
B's idle and under-attack p50 / p99 are recorded.

`attack` is also what measured the service without the defence (RELIABILITY.md): it only speaks HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.service.api.server import Server
from tests.service.reliability.conftest import new_tenant, running_server
from tests.service.reliability.figures import record
from tests.service.reliability.load import Outcome, async_client, final_statuses, percentile, send

MAX_STEPS, MAX_N = 20, 4
FLOOD = {"prompt": "a green square", "n": MAX_N, "steps": MAX_STEPS, "size": "16x16"}  # 80 image-steps a job
SMALL = {"prompt": "a red circle on a blue background", "steps": 4, "size": "16x16"}  # B: 4 image-steps
MAX_TENANT_WORK = 2 * MAX_N * MAX_STEPS  # A holds at most two jobs: 8 images of 20 steps
ENV = {
    "DIFFPLEX_LIMITS__MAX_STEPS": str(MAX_STEPS),
    "DIFFPLEX_LIMITS__MAX_N": str(MAX_N),
    "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0",  # the cap is what is measured, not the rate limit
    "DIFFPLEX_FAIRNESS__MAX_TENANT_WORK": str(MAX_TENANT_WORK),
}
FLOOD_PER_S = 10.0  # A's job posts per second, answered or not
IDLE_SAMPLES = 10  # before the attack, and as many after it
ATTACK_S = 15.0
LIVEZ_EVERY_S = 0.1
LIVEZ_BOUND_S = 0.1  # p99
LIVEZ_MAX_S = 1.0
# B under attack shares every U-Net call with A's eight images (18 rows instead of 2): each of its steps
# costs a full tick. Measured 3-7x its idle latency on two busy CPU cores; without the defence it waits behind
# A's whole backlog (26 s at p99 after 15 s of attack, and growing for as long as the attack lasts).
LATENCY_MULTIPLE = 10.0


@dataclass
class Attack:
    victim: list[Outcome] = field(default_factory=list)  # B's generations during the flood
    flood: list[Outcome] = field(default_factory=list)  # A's job posts
    livez_s: list[float] = field(default_factory=list)  # every probe's latency (a failed probe: inf)
    flood_messages: list[str] = field(default_factory=list)  # A's 429 messages

    def victim_latencies(self) -> list[float]:
        return sorted(o.latency_s for o in self.victim if o.status == 200)


async def victim_loop(url: str, key: str, until: float, out: list[Outcome], at_least: int = 0) -> None:
    """B: one small synchronous generation after another, until `until` (and `at_least` of them)."""
    async with async_client(url, key) as client:
        while time.perf_counter() < until or len(out) < at_least:
            out.append(await send(client, "sync", SMALL))


async def flood_loop(url: str, key: str, seconds: float, attack: Attack) -> None:
    """A: a large job every 1/FLOOD_PER_S seconds, open loop: it does not wait for answers nor honour them."""
    async with async_client(url, key) as client:

        async def post() -> Outcome:
            started = time.perf_counter()
            response = await client.post("/v1/jobs", json=FLOOD)
            outcome = Outcome("job", response.status_code, time.perf_counter() - started)
            outcome.retry_after = response.headers.get("retry-after")
            if response.status_code >= 400:
                outcome.code = response.json()["error"]["code"]
                attack.flood_messages.append(response.json()["error"]["message"])
            else:
                outcome.job_id = response.json()["id"]
            return outcome

        tasks = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            tasks.append(asyncio.create_task(post()))
            await asyncio.sleep(1 / FLOOD_PER_S)
        attack.flood = list(await asyncio.gather(*tasks))


def probe_livez(url: str, stop: threading.Event, out: list[float]) -> None:
    """On its own thread and connection, so the test's own event loop does not add to what is measured."""
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get("/livez").status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append(time.perf_counter() - started if ok else float("inf"))
            stop.wait(LIVEZ_EVERY_S)


def idle_latencies(url: str, key: str, samples: int = IDLE_SAMPLES) -> list[float]:
    outcomes: list[Outcome] = []
    asyncio.run(victim_loop(url, key, 0.0, outcomes, at_least=samples))
    assert all(o.status == 200 for o in outcomes), outcomes
    return sorted(o.latency_s for o in outcomes[1:])  # the first one warms B's connection


def attack(url: str, key_a: str, key_b: str, seconds: float = ATTACK_S) -> Attack:
    """A floods for `seconds` while B sends (from one second in, so A's backlog is there first) and /livez is
    probed; B's last request may finish after the flood."""
    result = Attack()
    stop = threading.Event()
    prober = threading.Thread(target=probe_livez, args=(url, stop, result.livez_s), daemon=True)
    prober.start()

    async def both() -> None:
        flood = asyncio.create_task(flood_loop(url, key_a, seconds, result))
        await asyncio.sleep(1.0)
        await victim_loop(url, key_b, time.perf_counter() + seconds - 1.0, result.victim, at_least=3)
        await flood

    try:
        asyncio.run(both())
    finally:
        stop.set()
        prober.join()
    return result


def summary(idle: list[float], attacked: Attack) -> dict[str, object]:
    under = attacked.victim_latencies()
    return {
        "b_idle_p50_s": round(percentile(idle, 0.5), 3),
        "b_idle_p99_s": round(percentile(idle, 0.99), 3),
        "b_attack_p50_s": round(percentile(under, 0.5), 3),
        "b_attack_p99_s": round(percentile(under, 0.99), 3),
        "b_requests": len(attacked.victim),
        "b_answers": dict(Counter(o.status for o in attacked.victim)),
        "a_answers": dict(Counter(f"{o.status} {o.code or ''}".strip() for o in attacked.flood)),
        "a_retry_after_s": dict(Counter(o.retry_after for o in attacked.flood if o.status == 429)),
        "livez_p99_ms": round(1000 * percentile(sorted(attacked.livez_s), 0.99), 1),
        "livez_max_ms": round(1000 * max(attacked.livez_s), 1),
        "livez_probes": len(attacked.livez_s),
    }


@pytest.fixture(scope="module")
def fair_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("fair"), **ENV) as server:
        yield server


def test_a_flooding_tenant_does_not_slow_another(fair_server: Server) -> None:
    _, key_a = new_tenant(fair_server, "flood")
    _, key_b = new_tenant(fair_server, "small")
    before = idle_latencies(fair_server.url, key_b)
    attacked = attack(fair_server.url, key_a, key_b)
    accepted = [o.job_id for o in attacked.flood if o.status == 202 and o.job_id]
    statuses = asyncio.run(final_statuses(fair_server.url, key_a, accepted, timeout_s=120))
    after = idle_latencies(fair_server.url, key_b)
    idle = sorted(before + after)
    figures = summary(idle, attacked)
    figures["b_idle_before_p50_s"] = round(percentile(before, 0.5), 3)
    figures["b_idle_after_p50_s"] = round(percentile(after, 0.5), 3)
    figures["a_jobs_final"] = dict(Counter(statuses.values()))
    record("fair_admission", **figures)

    under = attacked.victim_latencies()
    assert all(o.status == 200 for o in attacked.victim), attacked.victim
    assert percentile(under, 0.5) <= LATENCY_MULTIPLE * percentile(idle, 0.5), figures
    assert percentile(under, 0.99) <= LATENCY_MULTIPLE * percentile(idle, 0.99), figures
    busy = [o for o in attacked.flood if o.status == 429]
    assert busy and accepted, figures  # A got some work in and was refused beyond its cap
    assert all(o.code == "tenant_busy" and int(o.retry_after or 0) >= 1 for o in busy), busy[:3]
    assert all(o.status in (202, 429) for o in attacked.flood), figures  # nothing else: no 5xx, no reset
    assert f"limit is {MAX_TENANT_WORK}" in attacked.flood_messages[0], attacked.flood_messages[0]
    assert Counter(statuses.values()) == Counter({"succeeded": len(accepted)}), statuses  # nothing accepted lost
    assert percentile(sorted(attacked.livez_s), 0.99) < LIVEZ_BOUND_S, figures
    assert max(attacked.livez_s) < LIVEZ_MAX_S, figures
