"""A scaled-out deployment on loopback: one API replica of role "api" and `diffplex worker` processes on the real
Redis (DB 14, a unique key prefix deleted afterwards), over the tiny test backbone."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

from service.stores import RedisStore
from service.stores.job_stream import JobStream
from tests.service.api.server import ADMIN_KEY, Server

REDIS_URL = "redis://127.0.0.1:6379/14"


class Worker(Server):
    """A real `diffplex worker` process; `url` is its health port."""

    module = "service.commands.worker"
    consumer = ""  # its name in the stream's consumer group

    def running(self) -> set[str]:
        """Jobs it started and has not finished (from its log)."""
        started = {e["job"] for e in self.log_events("starting stored job")}
        return started - {e["job"] for e in self.log_events("job finished")}


class Cluster:
    def __init__(self, model_dir: Path, root: Path, workers: int, **env: str) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:12]}:"
        self.root = root
        self.model_dir = model_dir
        self.env = {
            "DIFFPLEX_REDIS_URL": REDIS_URL,
            "DIFFPLEX_REDIS_PREFIX": self.prefix,
            "DIFFPLEX_JOBS__STALE_AFTER_S": "3",
            "DIFFPLEX_JOBS__RECOVERY_EVERY_S": "0.5",
            "DIFFPLEX_JOBS__HEARTBEAT_S": "0.3",
            "DIFFPLEX_JOBS__RESULT_POLL_S": "0.05",
            "DIFFPLEX_WORKER__BLOCK_MS": "200",
            "DIFFPLEX_LIMITS__MAX_STEPS": "1000",
            **env,
        }
        self.api = Server(model_dir, root / "api-data", root / "api.log", DIFFPLEX_ROLE="api", **self.env)
        self.workers = [self.add_worker() for _ in range(workers)]
        self.store = RedisStore(REDIS_URL, self.prefix)
        self.stream = JobStream(self.store)

    def add_worker(self) -> Worker:
        name = f"w{len(getattr(self, 'workers', []))}-{uuid.uuid4().hex[:4]}"
        root = self.root
        worker = Worker(
            self.model_dir, root / f"{name}-data", root / f"{name}.log", DIFFPLEX_WORKER__CONSUMER=name, **self.env
        )
        worker.consumer = name
        return worker

    def wait_ready(self) -> None:
        for process in [self.api, *self.workers]:
            process.wait_ready()

    def tenant(self, name: str) -> httpx.Client:
        admin = httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        key = admin.post("/v1/admin/tenants", json={"name": name}).json()["api_key"]
        admin.close()
        return httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def held_by(self, worker: Worker) -> int:
        """Stream entries delivered to this worker and not acknowledged (its part of XPENDING)."""
        entries = self.store.client.xpending_range(
            self.stream.key, self.stream.group, "-", "+", 100_000, consumername=worker.consumer
        )
        return len(entries)

    def completions(self) -> Counter[str]:
        """How often each job's final record was written, over every worker's log."""
        return Counter(e["job"] for w in self.workers for e in w.log_events("job finished"))

    def stop(self) -> None:
        for process in [self.api, *self.workers]:
            process.stop()
        self.store.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{self.prefix}*"):
            client.delete(key)
        client.close()


@contextmanager
def running_cluster(model_dir: Path, root: Path, workers: int, **env: str) -> Iterator[Cluster]:
    """A started cluster (API replica and workers ready), stopped and its Redis keys deleted afterwards."""
    cluster = Cluster(model_dir, root, workers, **env)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def kill(process: Server, sig: signal.Signals = signal.SIGKILL) -> None:
    process.process.send_signal(sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        process.process.wait(timeout=180)


def event_time(event: dict) -> float:
    """A log line's `ts` (UTC, milliseconds) as a Unix time, to set against `time.time()` taken in the test."""
    return datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def wait_all_terminal(client: httpx.Client, job_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and len(done) < len(job_ids):
        for job_id in job_ids:
            if job_id not in done:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    done[job_id] = job
        time.sleep(0.2)
    missing = sorted(set(job_ids) - set(done))
    assert not missing, f"{len(missing)} jobs never finished: {missing[:5]}"
    return done
