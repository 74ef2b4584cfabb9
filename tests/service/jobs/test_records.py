"""A tenant's jobs (service/jobs/records.py): read with live progress, cancelled here or in the job stream,
awaited, forgotten; another tenant's job reads like a missing one."""

from __future__ import annotations

import asyncio

import pytest

from service.jobs import JobManager
from service.stores import RedisStore
from service.stores.job_stream import JobStream
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request

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


async def test_cancelling_a_job_running_here_frees_its_rows_at_once(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch))
    answered = await jobs.cancel(TENANT, record.id)
    assert answered is not None and answered.cancel_requested
    final = await model.drive(jobs.wait(TENANT, record.id))
    assert final is not None and final.status == "cancelled" and final.error is not None
    assert final.error["code"] == "cancelled" and model.images_made("ok") == 0
    assert await jobs.cancel("bob", record.id) is None  # another tenant's job: as if missing


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
