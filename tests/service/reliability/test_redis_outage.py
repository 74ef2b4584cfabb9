"""Redis faults under load, with the service on its own private Redis: first Redis hangs (SIGSTOP: connections
are accepted, nothing is answered), then it dies (SIGKILL) and is started again. During each fault every API
call is answered 503 + Retry-After with a message naming the store within a few seconds (never a 500, never a
dropped connection, never a request held for the outage; /livez stays up, /readyz says 503); the service
recovers by itself when Redis is back, and every job it accepted, before or around the faults, succeeds.

Worker faults (SIGKILL / SIGTERM of `diffplex worker` mid-run) are in tests/service/worker/test_scale_out.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.service.api.server import Server
from tests.service.api.test_jobs import wait_terminal
from tests.service.reliability.conftest import client_for, new_tenant, running_server
from tests.service.reliability.figures import record
from tests.service.reliability.redis_process import RedisProcess

PROMPT = "a red circle on a blue background"
BODY = {"prompt": PROMPT, "steps": 2, "size": "16x16"}
PREFIX = f"outage-{uuid.uuid4().hex[:8]}:"
FROZEN_S = 6.0
KILLED_S = 8.0
# The longest a call may take during a fault. Killed: connections are refused, so at once. Frozen: one Redis
# read timeout T (default 2 s, + the 0.2 s XREADGROUP block of this role "all" server: stores/open.py), after
# waiting at most about T for a thread of the server's pool: blocked store calls hold those threads (6 on a
# 2-core machine, 4 of them held by the stream worker's loops here). So about 2T, plus slack for a loaded
# machine. The old client waited 10 s per command, so a frozen Redis held every request at least that long.
ANSWER_BOUND_S = {"frozen": 8.0, "killed": 3.0}
PROBE_TIMEOUT_S = 60.0  # a held request shows up as a latency over the bound, not as a test that hangs
RECOVERY_TIMEOUT_S = 60.0
JOB_STEPS = 150  # pre-fault jobs still run when Redis goes away


@dataclass
class Answer:
    at: float
    took: float
    status: int  # 0: no HTTP answer
    code: str | None
    message: str
    retry_after: str | None
    job_id: str | None = None  # a 202's job


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Answer:
    at = time.monotonic()
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        return Answer(at, time.monotonic() - at, 0, None, f"{type(error).__name__}: {error}", None)
    took = time.monotonic() - at
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    error = body.get("error") if response.status_code >= 400 else None
    return Answer(
        at,
        took,
        response.status_code,
        error and error["code"],
        error["message"] if error else "",
        response.headers.get("retry-after"),
        body.get("id") if response.status_code == 202 else None,
    )


@dataclass
class Phase:
    """One fault: what the probes got while it lasted, and when the service answered normally again."""

    name: str
    down_at: float
    up_at: float = 0.0
    recovered_at: float | None = None
    jobs_in_flight: int = 0  # long jobs queued or running when the fault came
    probes: list[Answer] = field(default_factory=list)  # tenant API calls
    live: list[Answer] = field(default_factory=list)
    ready: list[Answer] = field(default_factory=list)

    def figures(self, load: list[Answer]) -> dict[str, Any]:
        during = [a for a in load if self.down_at <= a.at < self.up_at]
        return {
            "seconds": round(self.up_at - self.down_at, 1),
            "jobs_in_flight": self.jobs_in_flight,
            "probes": len(self.probes),
            "probe_answers": dict(Counter(f"{a.status} {a.code}" for a in self.probes)),
            "probe_max_s": round(max((a.took for a in self.probes), default=0.0), 2),
            "readyz": dict(Counter(a.status for a in self.ready)),
            "readyz_max_s": round(max((a.took for a in self.ready), default=0.0), 2),
            "load_requests": len(during),
            "load_answers": dict(Counter(a.status for a in during)),
            "recovery_s": None if self.recovered_at is None else round(self.recovered_at - self.up_at, 2),
        }


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path_factory.mktemp("redis"))
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def redis_server(
    private_redis: RedisProcess, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "DIFFPLEX_REDIS_URL": private_redis.url,
        "DIFFPLEX_REDIS_PREFIX": PREFIX,
        "DIFFPLEX_JOBS__HEARTBEAT_S": "0.3",
        "DIFFPLEX_JOBS__STALE_AFTER_S": "5",
        "DIFFPLEX_JOBS__RECOVERY_EVERY_S": "0.5",
        "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0",
        "DIFFPLEX_LIMITS__MAX_STEPS": str(JOB_STEPS),
        "DIFFPLEX_WORKER__BLOCK_MS": "200",
        # One tenant keeps several rounds of long jobs in flight (each fault's own, and earlier ones still running
        # on a slow machine): the per-tenant work cap is not what this test is about.
        "DIFFPLEX_FAIRNESS__MAX_TENANT_WORK": str(100 * 16 * JOB_STEPS),
    }  # the Redis client's timeouts and retry are the defaults (settings.RedisClientSettings)
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("outage"), **env) as server:
        yield server


class Load:
    """Steady requests until stopped, every answer kept: one thread per kind (a small generation, a job, an
    adapter listing), so a generation waiting for engine rows does not stop the others."""

    CALLS = (
        ("POST", "/v1/images/generations", {"json": BODY}),
        ("POST", "/v1/jobs", {"json": BODY}),
        ("GET", "/v1/adapters", {}),
    )

    def __init__(self, server: Server, key: str) -> None:
        self.client = client_for(server, key, timeout=PROBE_TIMEOUT_S)
        self.answers: list[Answer] = []
        self._stop_event = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=c, daemon=True) for c in self.CALLS]
        for thread in self._threads:
            thread.start()

    def _run(self, method: str, path: str, kwargs: dict[str, Any]) -> None:
        while not self._stop_event.wait(0.05):
            self.answers.append(call(self.client, method, path, **kwargs))

    def answered_since(self, at: float) -> int:
        return sum(a.at >= at for a in list(self.answers))

    def stop(self) -> None:
        self._stop_event.set()
        for thread in self._threads:
            thread.join()
        self.client.close()


def submit_long_jobs(client: httpx.Client, seed: int, count: int = 4) -> list[str]:
    """Jobs of 4 images x JOB_STEPS: still running when the fault comes right after."""
    body = {"prompt": PROMPT, "n": 4, "steps": JOB_STEPS, "size": "16x16"}
    answers = [client.post("/v1/jobs", json={**body, "seed": seed + i}) for i in range(count)]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    return [a.json()["id"] for a in answers]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def probe(server: Server, client: httpx.Client, job_id: str, phase: Phase, seconds: float) -> None:
    """For `seconds` (and one round of each call at least): /livez, /readyz and one tenant call (rotating over
    reads and a write) per round, timed; /readyz goes alongside, as a load balancer's probe would."""
    health = httpx.Client(base_url=server.url, timeout=PROBE_TIMEOUT_S)
    calls = [("GET", "/v1/adapters", {}), ("POST", "/v1/jobs", {"json": BODY}), ("GET", f"/v1/jobs/{job_id}", {})]
    with ThreadPoolExecutor(max_workers=1) as beside:
        while time.monotonic() - phase.down_at < seconds or len(phase.probes) < len(calls):
            ready = beside.submit(call, health, "GET", "/readyz")
            phase.live.append(call(health, "GET", "/livez"))
            method, path, kwargs = calls[len(phase.probes) % len(calls)]
            phase.probes.append(call(client, method, path, **kwargs))
            phase.ready.append(ready.result())
            time.sleep(0.2)
    health.close()


def recovered(server: Server, client: httpx.Client) -> float | None:
    """When the API served a tenant call and /readyz said ready again (polled), or None."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if call(client, "GET", "/v1/adapters").status == 200 and httpx.get(f"{server.url}/readyz").status_code == 200:
            return time.monotonic()
        time.sleep(0.2)
    return None


def fault(
    name: str,
    inject: Callable[[], None],
    clear: Callable[[], None],
    seconds: float,
    server: Server,
    client: httpx.Client,
    job_id: str,
) -> Phase:
    inject()
    phase = Phase(name, down_at=time.monotonic())
    try:
        probe(server, client, job_id, phase, seconds)
    finally:
        clear()
    phase.up_at = time.monotonic()
    phase.recovered_at = recovered(server, client)
    return phase


def stored_job_ids(url: str) -> set[str]:
    """Every job record in the private Redis: a write timed out against a frozen Redis still lands when it
    resumes, so a call answered 503 may have created a job after all."""
    client = redis.Redis.from_url(url)
    try:
        return {key.decode().removeprefix(f"{PREFIX}job:") for key in client.scan_iter(f"{PREFIX}job:*")}
    finally:
        client.close()


def assert_fault_answered(phase: Phase) -> None:
    bound = ANSWER_BOUND_S[phase.name]
    assert phase.probes, "no call was made during the fault"
    assert all(a.status == 200 and a.took < bound for a in phase.live), phase.live  # the process stays up
    assert all(a.status == 503 and a.took < bound for a in phase.ready), phase.ready
    for answer in phase.probes:  # every call answered, promptly, by the store's 503
        assert (answer.status, answer.code) == (503, "store_unavailable"), answer
        assert "Redis" in answer.message and answer.retry_after, answer
        assert answer.took < bound, f"{phase.name}: a call took {answer.took:.1f}s (bound {bound}s): {answer}"
    assert phase.recovered_at is not None, f"the API did not recover by itself after Redis was {phase.name}"


def test_redis_faults_answer_503_promptly_recover_and_lose_nothing(
    redis_server: Server, private_redis: RedisProcess
) -> None:
    _, key = new_tenant(redis_server, "outage")
    client = client_for(redis_server, key, timeout=PROBE_TIMEOUT_S)
    load = Load(redis_server, key)
    started = time.monotonic()
    wait_until(lambda: load.answered_since(started) >= 3, 120, "load answered before the faults")

    long_jobs: list[str] = []
    phases: list[Phase] = []
    for name, inject, clear, seconds in (
        ("frozen", private_redis.freeze, private_redis.thaw, FROZEN_S),
        ("killed", private_redis.kill, private_redis.start, KILLED_S),
    ):
        ids = submit_long_jobs(client, seed=len(long_jobs))
        long_jobs += ids
        running = sum(client.get(f"/v1/jobs/{j}").json()["status"] in ("queued", "running") for j in ids)
        phase = fault(name, inject, clear, seconds, redis_server, client, ids[0])
        phase.jobs_in_flight = running
        phases.append(phase)
        if phase.recovered_at is None:
            break  # asserted below, after the figures are kept
        at = phase.recovered_at + 1
        wait_until(lambda at=at: load.answered_since(at) >= 3, 120, "load answered after the recovery")
    load.stop()

    accepted = long_jobs + [a.job_id for a in load.answers if a.job_id]
    probes = [a for phase in phases for a in phase.probes]
    accepted += [a.job_id for a in probes if a.job_id]
    last = phases[-1].recovered_at
    extra, final = [], {}  # without a recovery there is nothing to poll: the assertions below say so
    if last is not None:
        extra = sorted(stored_job_ids(private_redis.url) - set(accepted))
        final = {job_id: wait_terminal(client, job_id, timeout=300)["status"] for job_id in accepted + extra}
    after = [a for a in load.answers if last is not None and a.at >= last + 1]
    record(
        "redis_outage",
        **{phase.name: phase.figures(load.answers) for phase in phases},
        requests=len(load.answers) + len(probes),
        answers=dict(Counter(a.status for a in load.answers + probes)),
        jobs_accepted=len(accepted),
        jobs_stored_after_a_503=len(extra),
        jobs_final=dict(Counter(final.values())),
        jobs_lost=sum(final.get(j) != "succeeded" for j in accepted),
    )
    for phase in phases:
        assert_fault_answered(phase)
    assert len(phases) == 2
    for answer in load.answers:  # the load's only refusal is the store's 503, saying so, with Retry-After
        assert answer.status in (200, 202, 503), answer
        if answer.status == 503:
            assert answer.code == "store_unavailable" and "Redis" in answer.message and answer.retry_after, answer
    assert after and all(a.status in (200, 202) for a in after), after[:5]
    fresh = client.post("/v1/jobs", json={"prompt": PROMPT, "steps": JOB_STEPS, "size": "16x16", "seed": 99})
    assert fresh.status_code == 202, fresh.text
    assert wait_terminal(client, fresh.json()["id"], timeout=300)["status"] == "succeeded"
    assert all(status == "succeeded" for status in final.values()), final
    client.close()
