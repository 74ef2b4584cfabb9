"""A full queue refuses whole requests (503 + Retry-After) without touching accepted work, and SIGTERM drains:
a job accepted before the signal is finished and recorded before the process exits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from service.stores import LocalStore
from tests.service.api.server import ADMIN_KEY, Server


def test_sigterm_finishes_accepted_jobs(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = Server(tiny_model_dir, tmp_path / "data", tmp_path / "server.log", DIFFPLEX_ENGINE__MAX_QUEUE="4")
    try:
        server.wait_ready()
        admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        key = admin.post("/v1/admin/tenants", json={"name": "acme"}).json()["api_key"]
        tenant = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
        body = {"prompt": "a red circle", "n": 2, "steps": 100, "size": "16x16", "response_format": "url"}
        job_id = tenant.post("/v1/jobs", json=body).json()["id"]
        full = tenant.post("/v1/images/generations", json={**body, "n": 3})  # 2 queued + 3 > 4
        assert full.status_code == 503, full.text
        assert full.json()["error"]["code"] == "queue_full" and int(full.headers["retry-after"]) >= 1
        # None of the 3 stays queued: images submitted before the refusal are cancelled at the engine's next
        # tick, which on a loaded machine can come a moment after the 503.
        deadline = time.monotonic() + 15
        while httpx.get(f"{server.url}/readyz").json()["load"] > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{server.url}/readyz").json()["load"] <= 2
        server.process.terminate()
        # uvicorn re-raises the signal once its graceful shutdown is complete
        assert server.process.wait(timeout=120) in (0, -15), server.logs()
        assert "Application shutdown complete" in server.logs()
    finally:
        server.stop()
    job = LocalStore(tmp_path / "data").get_job("acme", job_id)
    assert job is not None and job.status == "succeeded", job
    assert len(job.result["data"]) == 2  # type: ignore[index]
