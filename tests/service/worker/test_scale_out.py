"""API replica (role "api") + two `diffplex worker`s on the real Redis: every accepted job completes exactly
once when a worker is SIGKILLed mid-run (its stream entries are reclaimed by the survivor), synchronous requests
and SSE progress work through the queue, and a SIGTERMed worker finishes its running jobs before it exits 0."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.api.test_images import b64_pixels
from tests.service.api.test_jobs import read_events
from tests.service.worker.cluster import Cluster, kill, wait_all_terminal

PROMPT = "a red circle on a blue background"
BODY = {"prompt": PROMPT, "steps": 40, "size": "16x16"}  # long enough for a kill to land mid-run
FAST = {"steps": 2, "size": "16x16"}


@pytest.fixture
def cluster(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Cluster]:
    # two images in flight per worker: jobs stay in the stream and the kill finds work on the victim
    cluster = Cluster(tiny_model_dir, tmp_path, workers=2, DIFFPLEX_WORKER__MAX_IMAGES="2")
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def crash_one_worker_mid_run(cluster: Cluster, jobs: int) -> None:
    client = cluster.tenant("acme")
    ids = []
    for i in range(jobs):
        created = client.post("/v1/jobs", json={**BODY, "seed": 100 + i})
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    victim, survivor = cluster.workers
    deadline = time.monotonic() + 120
    while not victim.running():  # wait until the victim holds unfinished work
        assert time.monotonic() < deadline, victim.logs()
        time.sleep(0.05)
    kill(victim)  # no drain: its running jobs and their stream entries are orphaned
    orphaned = victim.running()
    assert orphaned

    done = wait_all_terminal(client, ids, timeout=600)
    assert {job["status"] for job in done.values()} == {"succeeded"}, [j for j in done.values() if j.get("error")]
    for i, job_id in enumerate(ids):
        assert [d["seed"] for d in done[job_id]["result"]["data"]] == [100 + i]
    completions = cluster.completions()
    assert {job_id: completions[job_id] for job_id in ids} == dict.fromkeys(ids, 1)  # exactly once each
    reclaimed = {e["job"] for e in survivor.log_events("reclaimed a job from a silent worker")}
    assert orphaned <= reclaimed, (orphaned, reclaimed)
    deadline = time.monotonic() + 15  # the XACK follows the final record by a moment
    while cluster.stream.pending() or cluster.stream.backlog():
        assert time.monotonic() < deadline, "entries left unacknowledged"
        time.sleep(0.1)


def test_a_killed_workers_jobs_complete_exactly_once(cluster: Cluster) -> None:
    crash_one_worker_mid_run(cluster, jobs=12)


@pytest.mark.slow
def test_fifty_jobs_survive_a_killed_worker(cluster: Cluster) -> None:
    crash_one_worker_mid_run(cluster, jobs=50)


def test_sync_requests_and_job_events_go_through_the_workers(cluster: Cluster) -> None:
    client = cluster.tenant("sync")
    answer = client.post("/v1/images/generations", json={"prompt": PROMPT, "n": 2, "seed": 5, **FAST})
    assert answer.status_code == 200, answer.text
    assert [d["seed"] for d in answer.json()["data"]] == [5, 6]
    assert b64_pixels(answer.json()["data"][0]).shape == (16, 16, 3)
    assert sum(cluster.completions().values()) == 1  # a worker made it: the API runs no model

    bad = client.post("/v1/images/generations", json={"prompt": PROMPT, "sampler": "nope"})
    assert bad.status_code == 400 and "unknown sampler" in bad.json()["error"]["message"]  # refused before queueing

    # Progress reaches the API through the store (worker heartbeat 0.3 s, API poll 0.5 s): the job must run
    # for seconds, or an idle machine finishes it between two polls and no `step` event can be seen.
    created = client.post("/v1/jobs", json={"prompt": PROMPT, "steps": 500, "size": "16x16"})
    assert created.status_code == 202, created.text
    job = created.json()
    events = read_events(client, job["id"])
    names = [name for name, _ in events]
    assert names[-1] == "done" and "step" in names, names
    steps = [data["step"] for name, data in events if name == "step"]
    assert steps == sorted(steps) and all(0 < s <= 500 for s in steps)


def test_cancelling_a_job_still_in_the_stream(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With no worker running, a cancelled job is final at once; a worker started later only acknowledges it."""
    cluster = Cluster(tiny_model_dir, tmp_path, workers=0)
    try:
        cluster.wait_ready()
        client = cluster.tenant("cancel")
        job = client.post("/v1/jobs", json={"prompt": PROMPT, **FAST}).json()
        assert job["status"] == "queued"
        cancelled = client.delete(f"/v1/jobs/{job['id']}").json()
        assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        assert cluster.stream.backlog() == 1
        cluster.workers.append(cluster.add_worker())
        cluster.workers[0].wait_ready()
        deadline = time.monotonic() + 30
        while cluster.stream.backlog() or cluster.stream.pending():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        assert not cluster.completions()  # nothing ran
    finally:
        cluster.stop()


def test_sigterm_drains_a_worker(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM: the worker takes no new job, finishes and acknowledges its running ones, exits 0; the jobs it
    never started are handed back to the stream and run by the next worker."""
    cluster = Cluster(tiny_model_dir, tmp_path, workers=1, DIFFPLEX_WORKER__MAX_IMAGES="2")
    try:
        cluster.wait_ready()
        client = cluster.tenant("drain")
        ids = [client.post("/v1/jobs", json={**BODY, "seed": i}).json()["id"] for i in range(6)]
        worker = cluster.workers[0]
        deadline = time.monotonic() + 120
        while not worker.running():
            assert time.monotonic() < deadline, worker.logs()
            time.sleep(0.05)
        in_flight = worker.running()
        kill(worker, signal.SIGTERM)
        assert worker.process.returncode == 0, worker.logs()
        finished = {e["job"] for e in worker.log_events("job finished")}
        assert in_flight <= finished, (in_flight, finished)  # its running rows were finished, not dropped
        assert cluster.stream.pending() == 0  # and acknowledged (or handed back, never left pending)

        cluster.workers.append(cluster.add_worker())
        cluster.workers[-1].wait_ready()
        done = wait_all_terminal(client, ids, timeout=300)
        assert {job["status"] for job in done.values()} == {"succeeded"}
        assert {job_id: cluster.completions()[job_id] for job_id in ids} == dict.fromkeys(ids, 1)
    finally:
        cluster.stop()
