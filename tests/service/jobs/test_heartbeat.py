"""Heartbeats (service/jobs/heartbeat.py): a running job's progress reaches the store for other replicas, and
what other replicas did reaches the run: a cancel, a reclaim (the run stops without writing), a deleted tenant."""

from __future__ import annotations

import asyncio

import pytest

from service.jobs import JobManager
from service.jobs.heartbeat import beat
from service.stores.base import JobRecord
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request, settings_with

pytestmark = pytest.mark.anyio


async def first_steps(model: LocalModel, jobs: JobManager, job_id: str) -> None:
    """Tick the engine until the job reports progress here (its images are not finished)."""
    while jobs.live[job_id].record.step == 0:
        await asyncio.to_thread(model.engine.tick)
        await asyncio.sleep(0)  # the engine thread's progress reaches the event loop
    assert not jobs.live[job_id].record.terminal


def stored(jobs: JobManager, job_id: str) -> JobRecord:
    record = jobs.store.get_job(TENANT, job_id)
    assert record is not None
    return record


async def test_a_heartbeat_writes_the_progress_made_here(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    record = await jobs.create(image_request(epoch, n=1, steps=20))
    await first_steps(model, jobs, record.id)
    assert stored(jobs, record.id).step == 0  # progress lives in memory between heartbeats
    await beat(jobs.live, jobs.store, jobs.ttl_s)
    written = stored(jobs, record.id)
    assert written.status == "running" and written.step == jobs.live[record.id].record.step > 0
    assert written.heartbeat > record.heartbeat


async def test_a_cancel_requested_on_another_replica_stops_the_run_at_the_next_heartbeat(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch))
    jobs.store.request_cancel(TENANT, record.id)  # DELETE /v1/jobs/{id} answered by another replica
    await beat(jobs.live, jobs.store, jobs.ttl_s)
    assert await model.drive(jobs.runs.tasks[record.id])
    cancelled = stored(jobs, record.id)
    assert cancelled.status == "cancelled" and cancelled.error is not None and cancelled.error["code"] == "cancelled"
    assert model.images_made("ok") == model.images_made("failed") == 0 and model.images_made("cancelled") == 2


async def test_a_run_whose_job_was_reclaimed_stops_without_writing(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch))
    # this replica looked dead (no heartbeat for stale_after_s): another claimed the job and runs it now
    [claimed] = jobs.store.claim_stale_jobs("other", 0.0, jobs.ttl_s)
    assert claimed.id == record.id
    await beat(jobs.live, jobs.store, jobs.ttl_s)
    assert not await model.drive(jobs.runs.tasks[record.id])  # not final: the other replica finishes it
    left = stored(jobs, record.id)
    assert (left.owner, left.status, left.result) == ("other", "queued", None)
    assert model.images_made("ok") == 0


async def test_a_heartbeat_that_finds_the_tenant_deleted_drops_the_run(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch))
    jobs.store.delete_tenant(TENANT)
    await beat(jobs.live, jobs.store, jobs.ttl_s)
    assert jobs.live[record.id].orphaned
    assert await model.drive(jobs.runs.tasks[record.id])  # nothing will ever be written
    assert jobs.store.get_job(TENANT, record.id) is None and model.images_made("ok") == 0


async def test_a_started_manager_heart_beats_on_its_own(make_model: MakeModel, open_manager: OpenManager) -> None:
    model = make_model(config=settings_with(jobs={"heartbeat_s": 0.05}))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    jobs.start(recover=False)
    record = await jobs.create(image_request(epoch, n=1, steps=20))
    await first_steps(model, jobs, record.id)
    deadline = asyncio.get_running_loop().time() + 10
    while stored(jobs, record.id).step == 0:
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat wrote the progress"
        await asyncio.sleep(0.05)
