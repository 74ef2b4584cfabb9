"""Two replicas on one Redis store: an adapter uploaded on one is used by the very next request on the other,
pub/sub drops the other's cached copy, and a job accepted by a replica that then crashes is finished by
the survivor."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from adapters.spec import BackboneSpec
from tests.service.api.adapter_files import lora_file
from tests.service.api.server import ADMIN_KEY, Server
from tests.service.api.test_adapters import PROMPT, image
from tests.service.api.test_images import FAST, assert_error, b64_pixels
from tests.service.api.test_jobs import read_events

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="module")
def replicas(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    root = tmp_path_factory.mktemp("replicas")
    env = {
        "DIFFPLEX_REDIS_URL": REDIS_URL,
        "DIFFPLEX_REDIS_PREFIX": prefix,
        "DIFFPLEX_JOBS__STALE_AFTER_S": "2",
        "DIFFPLEX_JOBS__RECOVERY_EVERY_S": "0.5",
        "DIFFPLEX_JOBS__HEARTBEAT_S": "0.3",
        "DIFFPLEX_LIMITS__MAX_STEPS": "500",
    }
    servers = [Server(tiny_model_dir, root / f"data{i}", root / f"server{i}.log", **env) for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def client_for(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def metric(server: Server, line_start: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


def test_adapter_changes_reach_the_other_replica_at_once(replicas: tuple[Server, Server], spec: BackboneSpec) -> None:
    a_server, b_server = replicas
    admin = client_for(a_server, ADMIN_KEY)
    key = admin.post("/v1/admin/tenants", json={"name": "acme"}).json()["api_key"]
    a, b = client_for(a_server, key), client_for(b_server, key)
    body = {"prompt": PROMPT, "seed": 2, **FAST}
    base = image(b.post("/v1/images/generations", json=body))

    assert a.put("/v1/adapters/style", files={"file": ("s.safetensors", lora_file(spec, 1))}).status_code == 201
    first = image(b.post("/v1/images/generations", json={**body, "adapters": [{"name": "style"}]}))
    assert not np.array_equal(first, base)

    evicted = metric(b_server, 'diffplex_adapter_cache_evictions_total{reason="changed"}')
    assert a.put("/v1/adapters/style", files={"file": ("s.safetensors", lora_file(spec, 2))}).status_code == 200
    second = image(b.post("/v1/images/generations", json={**body, "adapters": [{"name": "style"}]}))
    assert not np.array_equal(second, first)
    deadline = time.monotonic() + 5
    while metric(b_server, 'diffplex_adapter_cache_evictions_total{reason="changed"}') <= evicted:
        assert time.monotonic() < deadline, "replica b never heard of the change"
        time.sleep(0.05)

    assert a.delete("/v1/adapters/style").status_code == 200
    assert_error(b.post("/v1/images/generations", json={**body, "adapters": [{"name": "style"}]}), 404, "style")


def test_a_crashed_replicas_job_is_finished_by_the_other(replicas: tuple[Server, Server]) -> None:
    a_server, b_server = replicas
    admin = client_for(b_server, ADMIN_KEY)
    key = admin.post("/v1/admin/tenants", json={"name": "crash"}).json()["api_key"]
    a, b = client_for(a_server, key), client_for(b_server, key)
    created = a.post("/v1/jobs", json={"prompt": PROMPT, "n": 4, "seed": 9, "steps": 500, "size": "16x16"})
    assert created.status_code == 202, created.text
    os.kill(a_server.process.pid, signal.SIGKILL)  # no drain: the job is mid-flight
    a_server.process.wait()
    job_id = created.json()["id"]
    assert b.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running")  # a died with it unfinished
    events = read_events(b, job_id)  # followed on b: polled from the store, then live once b took it over
    assert events[-1][0] == "done", events[-3:]
    job = b.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert [d["seed"] for d in job["result"]["data"]] == [9, 10, 11, 12]
    assert b64_pixels(job["result"]["data"][0]).shape == (16, 16, 3)
