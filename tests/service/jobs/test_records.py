"""A tenant's jobs (service/jobs/records.py): read with live progress, cancelled here or in the job stream,
awaited, forgotten; another tenant's job reads like a missing one."""

from __future__ import annotations

import asyncio

import pytest

from service.api.routes.jobs import shown_status
from service.jobs import JobManager
from service.jobs.heartbeat import beat
from service.stores import LocalStore, RedisStore
from service.stores.base import JobRecord
from service.stores.job_stream import JobStream
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request, settings_with

pytestmark = pytest.mark.anyio


async def test_a_job_is_read_by_its_tenant_only_with_progress_fresher_than_the_store(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    model.add_tenant("bob")
    record = await jobs.create(image_request(epoch, n=1, steps=20))
    while jobs.live[record.id].record.step == 0:
        await asyncio.to_thread(model.engine.tick)
        await asyncio.sleep(0)
    seen = await jobs.get(TENANT, record.id)
    assert seen is not None and seen.status == "running" and seen.step > 0
    assert jobs.store.get_job(TENANT, record.id).step == 0  # type: ignore[union-attr] - no heartbeat yet
    assert await jobs.get("bob", record.id) is None
    assert await jobs.get(TENANT, "job_missing") is None


async def ticked_to(model: LocalModel, jobs: JobManager, job_id: str, step: int) -> int:
    """Tick the engine until the job here reports `step` or more; the step it reports."""
    while jobs.live[job_id].record.step < step:
        await asyncio.to_thread(model.engine.tick)
        await asyncio.sleep(0)  # the engine thread's progress reaches the event loop
    return jobs.live[job_id].record.step


async def heard(jobs: JobManager, job_id: str) -> None:
    """Until the run here knows of its job's cancel (the engine is not ticking meanwhile)."""
    deadline = asyncio.get_running_loop().time() + 5
    while not jobs.live[job_id].record.cancel_requested:
        assert asyncio.get_running_loop().time() < deadline, "the cancel never reached the run"
        await asyncio.sleep(0.005)


async def test_cancelling_a_job_running_here_stops_it_at_the_next_tick_and_answers_cancelled(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch, n=1, steps=20))
    step = await ticked_to(model, jobs, record.id, 3)
    answering = asyncio.create_task(jobs.cancel(TENANT, record.id))
    await heard(jobs, record.id)
    seen = await jobs.get(TENANT, record.id)
    assert seen is not None and seen.cancel_requested and shown_status(seen) == "cancelling"
    answered = await model.drive(answering)  # the DELETE's answer waits for the run's end: the next tick
    assert answered is not None and (answered.status, answered.step) == ("cancelled", step)
    assert answered.error is not None and answered.error["code"] == "cancelled"
    assert await jobs.get(TENANT, record.id) == answered  # GET agrees
    assert model.images_made("cancelled") == 1 and model.images_made("ok") == model.images_made("failed") == 0
    assert await jobs.cancel("bob", record.id) is None  # another tenant's job: as if missing


async def test_a_cancel_made_on_another_replica_reaches_the_run_through_the_store_not_its_heartbeat(
    make_model: MakeModel, open_manager: OpenManager, redis_store: RedisStore
) -> None:
    """Two replicas on Redis: the cancel recorded by one is announced (pub/sub) to the one that runs the job,
    which stops it at its engine's next tick; its heartbeat (a minute away) plays no part."""
    model = make_model(store=redis_store, config=settings_with(jobs={"heartbeat_s": 60.0}))
    epoch = model.add_tenant(TENANT)
    here, there = open_manager(model, replica="here"), open_manager(model, replica="there")
    here.start(recover=False)  # listens to the store's cancel notifications
    record = await here.create(image_request(epoch, n=1, steps=20))
    step = await ticked_to(model, here, record.id, 3)
    answering = asyncio.create_task(there.cancel(TENANT, record.id))  # DELETE on the other replica
    await heard(here, record.id)
    answered = await model.drive(answering)
    assert answered is not None and (answered.status, answered.step) == ("cancelled", step)
    assert model.images_made("cancelled") == 1 and model.images_made("ok") == 0


async def test_a_cancel_heard_before_a_claimed_job_starts_means_it_never_runs(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    """A worker that took a job but has not started it (planning, or waiting for engine room) when the cancel
    is announced remembers it: the job ends cancelled without a step."""
    jobs.start(recover=False)
    record = JobRecord(id="job_claimed", tenant=TENANT, epoch=epoch, request={"params": {"prompt": "x"}}, total=2)
    jobs.store.create_job(record, jobs.ttl_s)
    claimed = jobs.store.claim_job(TENANT, record.id, jobs.replica, jobs.ttl_s)
    assert claimed is not None and not claimed.cancel_requested
    jobs.store.request_cancel(TENANT, record.id)  # announced to this replica (LocalStore: in-process)
    while record.id not in jobs.runs.cancel_notices:
        await asyncio.sleep(0.005)
    assert await jobs.start_stored(claimed) is None  # settled at once
    final = jobs.store.get_job(TENANT, record.id)
    assert final is not None and (final.status, final.step) == ("cancelled", 0)
    assert model.engine.load == 0 and not jobs.live


async def test_a_cancel_its_runner_has_not_heard_of_yet_answers_cancelling_then_ends_cancelled(
    make_model: MakeModel, open_manager: OpenManager
) -> None:
    """Two processes sharing a LocalStore directory hear of each other's cancels only at heartbeats: the DELETE
    answers "cancelling" after its wait, and the job ends cancelled at its runner's next heartbeat."""
    model = make_model()
    epoch = model.add_tenant(TENANT)
    assert isinstance(model.store, LocalStore)
    other = make_model(store=LocalStore(model.store.root), config=settings_with(jobs={"heartbeat_s": 0.05}))
    here, there = open_manager(model, replica="here"), open_manager(other, replica="there", runs_model=False)
    record = await here.create(image_request(epoch, n=1, steps=20))
    await ticked_to(model, here, record.id, 2)
    answered = await there.cancel(TENANT, record.id)  # waits 2 heartbeats (0.1 s): nobody stops the run
    assert answered is not None and answered.cancel_requested and shown_status(answered) == "cancelling"
    assert shown_status(await there.get(TENANT, record.id)) == "cancelling"  # type: ignore[arg-type]
    await beat(here.live, here.store, here.ttl_s)  # the runner's next heartbeat reads the cancel
    assert await model.drive(here.runs.tasks[record.id])
    final = await there.get(TENANT, record.id)
    assert final is not None and final.status == "cancelled" and model.images_made("cancelled") == 1


async def test_cancelling_a_finished_job_changes_nothing(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    record = await jobs.create(image_request(epoch))
    done = await model.drive(jobs.wait(TENANT, record.id))
    assert done is not None and done.status == "succeeded"
    assert await jobs.cancel(TENANT, record.id) == done


async def test_cancelling_a_job_still_in_the_stream_ends_it_at_once(
    make_model: MakeModel, open_manager: OpenManager, redis_store: RedisStore
) -> None:
    model = make_model(store=redis_store)
    epoch = model.add_tenant(TENANT)
    stream = JobStream(redis_store)
    stream.ensure_group()
    api = open_manager(model, stream=stream, runs_model=False)
    record = await api.create(image_request(epoch))
    cancelled = await api.cancel(TENANT, record.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    # the worker that reads its entry finds it final and only acknowledges it (service/worker/consumer.py)
    assert [d.job_id for d in stream.read("worker-1", 10, 100)] == [record.id]


async def test_a_forgotten_job_frees_its_place_in_the_quota(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    record = await jobs.create(image_request(epoch))
    await model.drive(jobs.wait(TENANT, record.id))
    assert jobs.store.usage(TENANT, epoch).jobs == 1
    await jobs.forget(TENANT, record.id)
    assert await jobs.get(TENANT, record.id) is None and jobs.store.usage(TENANT, epoch).jobs == 0
