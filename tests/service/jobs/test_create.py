"""Accepting a job (service/jobs/create.py): stored with what a re-run needs and queued before it is
acknowledged, or refused with nothing stored and nothing queued."""

from __future__ import annotations

import pytest

from service.engine import TenantBusy
from service.generation.plan import InvalidRequest
from service.jobs import JobManager
from service.stores import QuotaExceeded, RedisStore, StorageQuota, TenantGone
from service.stores.job_stream import JobStream
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request, settings_with

pytestmark = pytest.mark.anyio


def nothing_accepted(jobs: JobManager, epoch: str) -> bool:
    """No record stored, no image queued, nothing running."""
    return jobs.store.usage(TENANT, epoch).jobs == 0 and jobs.runner.engine.load == 0 and not jobs.live


async def test_a_job_is_stored_with_its_resolved_seed_and_queued_before_it_is_acknowledged(
    jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch, n=3, steps=2))
    assert record.id.startswith("job_") and record.status == "queued"
    assert (record.tenant, record.epoch, record.owner, record.total) == (TENANT, epoch, "here", 6)
    stored = jobs.store.get_job(TENANT, record.id)
    assert stored is not None and stored.request == record.request
    seed = record.request["params"]["seed"]
    assert isinstance(seed, int)  # drawn once: a re-run makes the same images
    assert record.request["base_url"] == "http://diffplex.test" and "image" not in record.request
    assert jobs.runner.engine.load == 3 and record.id in jobs.live


async def test_over_the_job_record_quota_nothing_is_accepted(make_model: MakeModel, open_manager: OpenManager) -> None:
    model = make_model(quota=StorageQuota(max_jobs=1))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    first = await jobs.create(image_request(epoch))
    with pytest.raises(QuotaExceeded, match="you have 1 job records stored and the limit is 1"):
        await jobs.create(image_request(epoch))
    assert jobs.store.usage(TENANT, epoch).jobs == 1 and list(jobs.live) == [first.id]
    assert model.engine.load == 2  # the first job's images only


async def test_a_url_job_without_room_for_its_images_is_refused(
    make_model: MakeModel, open_manager: OpenManager
) -> None:
    model = make_model(quota=StorageQuota(max_files=1))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    with pytest.raises(QuotaExceeded, match="url images"):
        await jobs.create(image_request(epoch, n=2, response_format="url"))
    assert nothing_accepted(jobs, epoch)
    await jobs.create(image_request(epoch, n=2))  # b64_json images are not files: the same job is accepted


async def test_a_tenant_over_its_engine_work_cap_is_refused_before_anything_is_stored(
    make_model: MakeModel, open_manager: OpenManager
) -> None:
    model = make_model(config=settings_with(fairness={"max_tenant_work": 4}))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    await jobs.create(image_request(epoch, n=2, steps=2))  # 4 image-steps: at the cap
    with pytest.raises(TenantBusy, match="already has 4 image-steps"):
        await jobs.create(image_request(epoch, n=1, steps=2))
    assert jobs.store.usage(TENANT, epoch).jobs == 1 and model.engine.load == 2


async def test_an_invalid_request_is_refused_before_anything_is_stored(jobs: JobManager, epoch: str) -> None:
    with pytest.raises(InvalidRequest, match="adapter 'ghost' not found") as refused:
        await jobs.create(image_request(epoch, adapters=[{"name": "ghost"}]))
    assert refused.value.status == 404
    assert nothing_accepted(jobs, epoch)


async def test_a_deleted_incarnation_cannot_create_jobs_under_a_new_tenant_of_its_name(
    jobs: JobManager, epoch: str
) -> None:
    jobs.store.delete_tenant(TENANT)
    jobs.store.create_tenant(TENANT)
    again = jobs.store.get_tenant(TENANT)
    assert again is not None and again.epoch != epoch
    with pytest.raises(TenantGone):
        await jobs.create(image_request(epoch))
    assert nothing_accepted(jobs, again.epoch)


async def test_with_the_job_stream_a_job_is_enqueued_for_the_workers(
    make_model: MakeModel, open_manager: OpenManager, redis_store: RedisStore
) -> None:
    model = make_model(store=redis_store)
    epoch = model.add_tenant(TENANT)
    stream = JobStream(redis_store)
    stream.ensure_group()
    api = open_manager(model, stream=stream, runs_model=False)
    record = await api.create(image_request(epoch, n=2, steps=2))
    assert record.owner == "" and not api.live  # a worker becomes its owner
    assert [d.job_id for d in stream.read("worker-1", 10, 100)] == [record.id]
    stored = redis_store.get_job(TENANT, record.id)
    assert stored is not None and stored.status == "queued"


async def test_with_the_job_stream_a_tenant_over_its_unfinished_work_is_told_to_retry(
    make_model: MakeModel, open_manager: OpenManager, redis_store: RedisStore
) -> None:
    model = make_model(store=redis_store, config=settings_with(fairness={"max_tenant_work": 4}))
    epoch = model.add_tenant(TENANT)
    stream = JobStream(redis_store)
    stream.ensure_group()
    api = open_manager(model, stream=stream, runs_model=False)
    await api.create(image_request(epoch, n=2, steps=2))
    with pytest.raises(TenantBusy) as busy:
        await api.create(image_request(epoch, n=1, steps=2))
    assert busy.value.retry_after_s == 5.0
    assert redis_store.usage(TENANT, epoch).jobs == 1
