"""API replica (role "api") + two `diffplex worker`s on the real Redis: every accepted job completes exactly
once when a worker is SIGKILLed mid-run (its stream entries are reclaimed by the survivor), synchronous requests
and SSE progress work through the queue, and a SIGTERMed worker finishes its running jobs before it exits 0.
The two faults write their figures to `.work/reliability/` (tests/service/reliability/figures.py), which
RELIABILITY.md quotes under "Worker faults"."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.api.test_images import b64_pixels, images_total
from tests.service.api.test_jobs import assert_stopped_within_a_tick, read_events
from tests.service.reliability.figures import record
from tests.service.worker.cluster import Cluster, Worker, event_time, kill, running_cluster, wait_all_terminal

PROMPT = "a red circle on a blue background"
IMAGES = 1  # per job: one U-Net row each
BODY = {"prompt": PROMPT, "n": IMAGES, "steps": 40, "size": "16x16"}  # long enough for a kill to land mid-run
FAST = {"steps": 2, "size": "16x16"}


@pytest.fixture
def cluster(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Cluster]:
    # two images in flight per worker: jobs stay in the stream and the kill finds work on the victim
    with running_cluster(tiny_model_dir, tmp_path, workers=2, DIFFPLEX_WORKER__MAX_IMAGES="2") as cluster:
        yield cluster


def wait_running(worker: Worker) -> None:
    deadline = time.monotonic() + 120
    while not worker.running():  # wait until it holds unfinished work
        assert time.monotonic() < deadline, worker.logs()
        time.sleep(0.05)


def wait_acknowledged(cluster: Cluster, timeout: float = 15) -> int:
    """Poll until every entry is acknowledged (the XACK follows the final record by a moment); what is left."""
    deadline = time.monotonic() + timeout
    while (left := cluster.stream.pending() + cluster.stream.backlog()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def outcome(cluster: Cluster, done: dict[str, dict]) -> dict[str, int]:
    """The figures every worker fault reports: each accepted job succeeded exactly once, nothing lost."""
    completions = cluster.completions()
    return {
        "jobs_succeeded": sum(job["status"] == "succeeded" for job in done.values()),
        "completed_exactly_once": sum(completions[job_id] == 1 for job_id in done),
        "completed_twice_or_more": sum(completions[job_id] > 1 for job_id in done),
        "jobs_lost": sum(job["status"] != "succeeded" for job in done.values()),
        "entries_left_unacknowledged": wait_acknowledged(cluster),
    }


def crash_one_worker_mid_run(cluster: Cluster, jobs: int, figures: str) -> None:
    client = cluster.tenant("acme")
    submitted_at = time.time()
    ids = []
    for i in range(jobs):
        created = client.post("/v1/jobs", json={**BODY, "seed": 100 + i})
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    victim, survivor = cluster.workers
    wait_running(victim)
    killed_at = time.time()
    kill(victim)  # no drain: its running jobs and their stream entries are orphaned
    orphaned = victim.running()
    held = cluster.held_by(victim)  # still all its own: reclaims wait for 3 s of idleness
    assert orphaned

    done = wait_all_terminal(client, ids, timeout=600)
    recovered_at = time.time()
    reclaims = [e for e in survivor.log_events("reclaimed a job from a silent worker") if e["job"] in ids]
    reclaimed = {e["job"] for e in reclaims}
    record(
        figures,
        jobs_submitted=jobs,
        workers=2,
        fault={
            "signal": "SIGKILL",
            "after_s": round(killed_at - submitted_at, 2),  # from the first submission
            "jobs_in_flight": len(orphaned),  # started on the victim and unfinished
            "rows_in_flight": len(orphaned) * IMAGES,
            "entries_held": held,  # its pending stream entries: in flight or taken and waiting for room
        },
        jobs_reclaimed=len(reclaimed),
        last_reclaim_s=round(max(map(event_time, reclaims), default=killed_at) - killed_at, 2),
        recovered_s=round(recovered_at - killed_at, 2),  # kill -> every job final (polled every 0.2 s)
        **outcome(cluster, done),
    )
    assert {job["status"] for job in done.values()} == {"succeeded"}, [j for j in done.values() if j.get("error")]
    for i, job_id in enumerate(ids):
        assert [d["seed"] for d in done[job_id]["result"]["data"]] == [100 + i]
    completions = cluster.completions()
    assert {job_id: completions[job_id] for job_id in ids} == dict.fromkeys(ids, 1)  # exactly once each
    assert orphaned <= reclaimed, (orphaned, reclaimed)
    assert wait_acknowledged(cluster) == 0, "entries left unacknowledged"


def test_a_killed_workers_jobs_complete_exactly_once(cluster: Cluster) -> None:
    crash_one_worker_mid_run(cluster, jobs=12, figures="worker_sigkill")


@pytest.mark.slow
def test_fifty_jobs_survive_a_killed_worker(cluster: Cluster) -> None:
    crash_one_worker_mid_run(cluster, jobs=50, figures="worker_sigkill_50_jobs")


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


def test_cancelling_a_job_in_the_stream_and_one_a_worker_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With no worker running, a cancelled job is final at once; a worker started later only acknowledges it.
    A job the worker runs hears of its cancel through Redis pub/sub, not its heartbeat (2 s here): it stops
    within an engine tick, the DELETE on the API replica answers it "cancelled" at the step it stopped at, and
    the worker counts its images as cancelled."""
    cluster = Cluster(tiny_model_dir, tmp_path, workers=0, DIFFPLEX_JOBS__HEARTBEAT_S="2")
    try:
        cluster.wait_ready()
        client = cluster.tenant("cancel")
        job = client.post("/v1/jobs", json={"prompt": PROMPT, **FAST}).json()
        assert job["status"] == "queued"
        cancelled = client.delete(f"/v1/jobs/{job['id']}").json()
        assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        assert cluster.stream.backlog() == 1
        cluster.workers.append(cluster.add_worker())
        worker = cluster.workers[0]
        worker.wait_ready()
        deadline = time.monotonic() + 30
        while cluster.stream.backlog() or cluster.stream.pending():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        assert not cluster.completions()  # nothing ran

        running = client.post("/v1/jobs", json={"prompt": PROMPT, "n": 2, "steps": 500, "size": "16x16"}).json()
        wait_running(worker)
        time.sleep(0.3)  # some steps in, and no heartbeat has written its progress yet
        asked_at = time.time()
        deleted = client.delete(f"/v1/jobs/{running['id']}")
        answered_s = time.time() - asked_at
        answer = deleted.json()
        assert deleted.status_code == 200 and answer["status"] == "cancelled", answer
        assert client.get(f"/v1/jobs/{running['id']}").json() == answer  # final: GET agrees
        [heard] = [e for e in worker.log_events("cancelling job") if e["job"] == running["id"]]
        assert not worker.log_events("cancelling job at its heartbeat")  # pub/sub got there first
        assert event_time(heard) - asked_at < 0.5 and answered_s < 1.5, (event_time(heard) - asked_at, answered_s)
        assert_stopped_within_a_tick(worker, answer, images=2)
        assert 0 < answer["progress"]["step"] < 1000
        print(  # the figures of the last run, for the record (pytest -s)
            f"\n[cancel] heard at step {heard['step']} after {event_time(heard) - asked_at:.3f}s, "
            f"stopped at {answer['progress']['step']}, DELETE answered in {answered_s:.3f}s"
        )
        wait_acknowledged(cluster)
        outcomes = {o: images_total(worker, o) for o in ("ok", "failed", "cancelled")}
        assert outcomes == {"ok": 0, "failed": 0, "cancelled": 2}, outcomes
    finally:
        cluster.stop()


def test_sigterm_drains_a_worker(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM: the worker takes no new job, finishes and acknowledges its running ones, exits 0; the jobs it
    never started are handed back to the stream and run by the next worker."""
    cluster = Cluster(tiny_model_dir, tmp_path, workers=1, DIFFPLEX_WORKER__MAX_IMAGES="2")
    try:
        cluster.wait_ready()
        client = cluster.tenant("drain")
        submitted_at = time.time()
        ids = [client.post("/v1/jobs", json={**BODY, "seed": i}).json()["id"] for i in range(6)]
        worker = cluster.workers[0]
        wait_running(worker)
        in_flight, held = worker.running(), cluster.held_by(worker)
        signalled_at = time.time()
        kill(worker, signal.SIGTERM)
        exited_at = time.time()
        finished = {e["job"] for e in worker.log_events("job finished")}
        pending_after_exit = cluster.stream.pending()

        cluster.workers.append(cluster.add_worker())
        cluster.workers[-1].wait_ready()
        done = wait_all_terminal(client, ids, timeout=300)
        record(
            "worker_sigterm",
            jobs_submitted=len(ids),
            workers="1, then a replacement",
            fault={
                "signal": "SIGTERM",
                "after_s": round(signalled_at - submitted_at, 2),
                "jobs_in_flight": len(in_flight),
                "rows_in_flight": len(in_flight) * IMAGES,
                "entries_held": held,  # just before the signal
            },
            drain_s=round(exited_at - signalled_at, 2),  # signal -> exit
            exit_code=worker.process.returncode,
            finished_while_draining=len(in_flight & finished),
            finished_by_the_drained_worker=len(finished & set(ids)),
            handed_back=len(set(ids) - finished),  # run by the replacement
            pending_after_exit=pending_after_exit,
            recovered_s=round(time.time() - signalled_at, 2),  # signal -> every job final, replacement start included
            **outcome(cluster, done),
        )
        assert worker.process.returncode == 0, worker.logs()
        assert in_flight <= finished, (in_flight, finished)  # its running rows were finished, not dropped
        assert pending_after_exit == 0  # and acknowledged (or handed back, never left pending)
        assert {job["status"] for job in done.values()} == {"succeeded"}
        assert {job_id: cluster.completions()[job_id] for job_id in ids} == dict.fromkeys(ids, 1)
    finally:
        cluster.stop()
