"""Asynchronous jobs: 202 + polling, server-sent events, cancellation, tenant scoping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.api.conftest import make_tenant
from tests.service.api.server import ADMIN_KEY, Server, running_server
from tests.service.api.test_images import FAST, assert_error, b64_pixels, images_total

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


OUTCOMES = ("ok", "failed", "cancelled")


def wait_step(client: httpx.Client, job_id: str, step: int) -> None:
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < step:
        assert time.monotonic() < deadline, "the job never reached the step"
        time.sleep(0.01)


def assert_stopped_within_a_tick(process: Server, answer: dict, images: int, message: str = "cancelling job") -> None:
    """The step the runner logged when it stopped the job, against the final record's: one engine tick makes a
    step of each image; the tick in flight finishes, and one more may have run before its progress reached
    the event loop that logged the cancel."""
    [event] = [e for e in process.log_events(message) if e["job"] == answer["id"]]
    assert event["step"] <= answer["progress"]["step"] <= event["step"] + 2 * images, (event, answer)


def test_a_cancelled_job_stops_within_a_step_and_is_counted_cancelled(server: Server, alice: httpx.Client) -> None:
    """The DELETE of a running job answers the state it ends in ("cancelled", with the step it stopped at, which
    GET then shows too); its rows left the engine at the next tick; its images count as cancelled."""
    before = {outcome: images_total(server, outcome) for outcome in OUTCOMES}
    job = alice.post("/v1/jobs", json={"prompt": PROMPT, "steps": 200, "n": 2, "size": "16x16"}).json()
    wait_step(alice, job["id"], 4)
    deleted = alice.delete(f"/v1/jobs/{job['id']}")
    assert deleted.status_code == 200, deleted.text
    answer = deleted.json()
    assert answer["status"] == "cancelled" and answer["error"]["code"] == "cancelled", answer
    assert alice.get(f"/v1/jobs/{job['id']}").json() == answer  # final: GET agrees, nothing moves on
    assert answer["progress"]["total"] == 400 and answer["progress"]["step"] < 400
    assert_stopped_within_a_tick(server, answer, images=2)
    events = read_events(alice, job["id"])
    assert events[-1] == ("error", {"id": job["id"], "status": "cancelled", "error": answer["error"]})
    after = {outcome: images_total(server, outcome) for outcome in OUTCOMES}
    assert {o: after[o] - before[o] for o in OUTCOMES} == {"ok": 0, "failed": 0, "cancelled": 2}
    again = alice.delete(f"/v1/jobs/{job['id']}")  # a finished job is answered unchanged
    assert again.status_code == 200 and again.json() == answer


@pytest.fixture(scope="module")
def quota_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small storage quotas: 3 job records and 2 url images per tenant."""
    env = {
        "DIFFPLEX_LIMITS__MAX_JOBS_PER_TENANT": "3",
        "DIFFPLEX_LIMITS__MAX_FILES_PER_TENANT": "2",
        "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0",
    }
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("quota-server"), **env) as process:
        yield process


def quota_tenant(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120) as admin:
        return make_tenant(admin, server)


def test_a_job_over_the_record_quota_is_refused_at_creation_and_nothing_is_accepted(quota_server: Server) -> None:
    alice = quota_tenant(quota_server)
    created = [alice.post("/v1/jobs", json={"prompt": PROMPT, "seed": i, **FAST}) for i in range(3)]
    assert [c.status_code for c in created] == [202] * 3, [c.text for c in created]
    refused = alice.post("/v1/jobs", json={"prompt": PROMPT, "seed": 3, **FAST})
    error = assert_error(refused, 403, "you have 3 job records stored and the limit is 3", "the oldest expires in")
    assert (error["type"], error["code"]) == ("insufficient_quota", "quota_exceeded")
    assert "location" not in refused.headers
    assert all(wait_terminal(alice, c.json()["id"])["status"] == "succeeded" for c in created)
    records = sorted(p.stem for p in (quota_server.log_path.parent / "data" / "jobs" / alice.tenant).glob("*.json"))
    assert records == sorted(c.json()["id"] for c in created)  # the refused job was never stored, nor run
    alice.close()


def test_a_url_job_without_room_for_its_images_is_refused_at_creation(quota_server: Server) -> None:
    bob = quota_tenant(quota_server)
    body = {"prompt": PROMPT, "response_format": "url", **FAST}
    error = assert_error(bob.post("/v1/jobs", json={**body, "n": 3}), 403, "the limit is 2", "b64_json")
    assert error["code"] == "quota_exceeded"
    job = bob.post("/v1/jobs", json={**body, "n": 2})
    assert job.status_code == 202, job.text
    done = wait_terminal(bob, job.json()["id"])
    assert done["status"] == "succeeded" and all("url" in d for d in done["result"]["data"])
    assert_error(bob.post("/v1/jobs", json={**body, "n": 1}), 403, "you have 2 url images stored")
    assert bob.post("/v1/jobs", json={"prompt": PROMPT, **FAST}).status_code == 202  # b64_json stores no file
    bob.close()


JOB_BYTES_CAP = 8000  # a record holds its request (~1 kB); 8 images of 32x32 as base64 take far more


@pytest.fixture(scope="module")
def job_bytes_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A small cap on the bytes of each tenant's job records."""
    env = {"DIFFPLEX_LIMITS__MAX_JOB_BYTES_PER_TENANT": str(JOB_BYTES_CAP), "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0"}
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("job-bytes-server"), **env) as process:
        yield process


def test_a_b64_result_over_the_job_bytes_fails_the_job_and_a_full_tenant_gets_403(job_bytes_server: Server) -> None:
    alice = quota_tenant(job_bytes_server)
    big = alice.post("/v1/jobs", json={"prompt": PROMPT, "n": 8, "steps": 2, "size": "32x32"})
    assert big.status_code == 202, big.text  # accepted: its images' size is known only once they are made
    failed = wait_terminal(alice, big.json()["id"])
    assert failed["status"] == "failed" and failed.get("result") is None, failed  # not lost, not silently
    error = failed["error"]
    assert (error["code"], error["type"]) == ("quota_exceeded", "insufficient_quota"), error
    for words in (f"did not fit your job records' limit of {JOB_BYTES_CAP} bytes", "The images were not kept"):
        assert words in error["message"], error["message"]
    for advice in ("response_format url", "fewer images per job", "fewer jobs"):
        assert advice in error["message"], error["message"]
    assert read_events(alice, big.json()["id"])[-1] == ("error", {"id": big.json()["id"], **failed_part(failed)})

    # url images are files (their own quota): the record stays small and fits
    url = alice.post("/v1/jobs", json={"prompt": PROMPT, "n": 2, "response_format": "url", **FAST})
    assert url.status_code == 202, url.text
    done = wait_terminal(alice, url.json()["id"])
    assert done["status"] == "succeeded", done
    for item in done["result"]["data"]:
        assert alice.get(item["url"].removeprefix(job_bytes_server.url)).status_code == 200

    # small b64 jobs fill the rest; once a new record would not fit, jobs are refused before anything is stored
    for seed in range(20):
        created = alice.post("/v1/jobs", json={"prompt": PROMPT, "seed": seed, **FAST})
        if created.status_code != 202:
            break
        final = wait_terminal(alice, created.json()["id"])
        assert final["status"] == "succeeded" or final["error"]["code"] == "quota_exceeded", final
    else:
        raise AssertionError("20 small jobs never filled 8000 bytes of job records")
    refusal = assert_error(created, 403, "your job records take", f"the limit is {JOB_BYTES_CAP} bytes per tenant")
    assert refusal["code"] == "quota_exceeded" and "response_format url" in refusal["message"], refusal
    again = alice.post("/v1/jobs", json={"prompt": PROMPT, "response_format": "url", **FAST})
    assert_error(again, 403, "your job records take")  # any format: the record itself needs room
    records = (job_bytes_server.log_path.parent / "data" / "jobs" / alice.tenant).glob("*.json")
    assert sum(p.stat().st_size for p in records) < JOB_BYTES_CAP + 1000  # a last failure may pass it a little
    assert alice.post("/v1/images/generations", json={"prompt": PROMPT, **FAST}).status_code == 200  # no record

    bob = quota_tenant(job_bytes_server)  # the cap is per tenant
    assert wait_terminal(bob, bob.post("/v1/jobs", json={"prompt": PROMPT, **FAST}).json()["id"])["status"] == (
        "succeeded"
    )
    alice.close()
    bob.close()


def failed_part(job: dict) -> dict:
    """What the events stream's `error` event carries of a finished job."""
    return {"status": job["status"], "error": job["error"]}
