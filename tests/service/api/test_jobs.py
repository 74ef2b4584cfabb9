"""Asynchronous jobs: 202 + polling, server-sent events, cancellation, tenant scoping."""

from __future__ import annotations

import json
import time

import httpx

from tests.service.api.test_images import FAST, assert_error, b64_pixels

PROMPT = "a red circle on a blue background"


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def read_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_job_is_accepted_then_polled_to_its_images(alice: httpx.Client, bob: httpx.Client) -> None:
    created = alice.post("/v1/jobs", json={"prompt": PROMPT, "n": 2, "seed": 4, **FAST})
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] in ("queued", "running", "succeeded") and created.headers["location"].endswith(job["id"])
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert [d["seed"] for d in done["result"]["data"]] == [4, 5]
    assert b64_pixels(done["result"]["data"][0]).shape == (16, 16, 3)
    assert done["progress"]["step"] == done["progress"]["total"] == 4
    assert_error(bob.get(f"/v1/jobs/{job['id']}"), 404, "not found")
    assert_error(bob.delete(f"/v1/jobs/{job['id']}"), 404, "not found")
    assert_error(bob.get(f"/v1/jobs/{job['id']}/events"), 404, "not found")
    assert_error(alice.get("/v1/jobs/job_missing"), 404, "not found")


def test_invalid_jobs_are_refused_up_front(alice: httpx.Client) -> None:
    assert_error(alice.post("/v1/jobs", json={"prompt": PROMPT, "sampler": "nope"}), 400, "unknown sampler")
    assert_error(alice.post("/v1/jobs", json={"prompt": PROMPT, "adapters": [{"name": "x"}]}), 404, "'x'")


def test_events_stream_steps_then_done(alice: httpx.Client) -> None:
    job = alice.post("/v1/jobs", json={"prompt": PROMPT, "steps": 60, "size": "16x16"}).json()
    events = read_events(alice, job["id"])
    names = [name for name, _ in events]
    assert names[-1] == "done" and "step" in names, names
    assert set(names) <= {"queued", "step", "done"}
    steps = [data["step"] for name, data in events if name == "step"]
    assert steps == sorted(steps) and all(0 < s <= 60 for s in steps)
    assert all(data["total"] == 60 for name, data in events if name == "step")
    assert events[-1][1]["result"]["data"][0]["seed"] >= 0
    again = read_events(alice, job["id"])  # a finished job answers its end at once
    assert [name for name, _ in again] == ["done"]


def test_cancelling_a_running_job(alice: httpx.Client) -> None:
    job = alice.post("/v1/jobs", json={"prompt": PROMPT, "steps": 60, "n": 4, "size": "16x16"}).json()
    cancelled = alice.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200, cancelled.text
    final = wait_terminal(alice, job["id"])
    if final["status"] != "succeeded":  # it may have finished before the cancel landed
        assert final["status"] == "cancelled"
        assert final["error"]["code"] == "cancelled"
        events = read_events(alice, job["id"])
        assert events[-1][0] == "error" and events[-1][1]["status"] == "cancelled"
