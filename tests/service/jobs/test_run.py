"""Running a job (service/jobs/run.py): its images made on the engine and its outcome written once, as a
success, a failure with the reason, or nothing at all when its tenant was deleted meanwhile."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.jobs import JobManager
from service.stores import StorageQuota
from service.stores.base import JobRecord
from tests.service.api.adapter_files import lora_file
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request

pytestmark = pytest.mark.anyio


def pixels(item: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))))


async def run_to_the_end(model: LocalModel, jobs: JobManager, job_id: str) -> bool:
    """Make the job's images; whether its run ended with its record final."""
    assert job_id in jobs.live
    return await model.drive(jobs.runs.tasks[job_id])  # its run, started by `create`


def stored(jobs: JobManager, job_id: str) -> JobRecord:
    record = jobs.store.get_job(TENANT, job_id)
    assert record is not None
    return record


async def test_a_job_succeeds_with_its_images_and_full_progress(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch, n=2, steps=2, seed=11))
    assert await run_to_the_end(model, jobs, record.id)
    done = stored(jobs, record.id)
    assert (done.status, done.step, done.total, done.error) == ("succeeded", 4, 4, None)
    assert done.result is not None
    assert [item["seed"] for item in done.result["data"]] == [11, 12]
    assert pixels(done.result["data"][0]).shape == (16, 16, 3)
    assert not jobs.live  # no longer running here: readers get the stored record
    assert (await jobs.get(TENANT, record.id)) == done


async def test_a_url_job_whose_images_no_longer_fit_fails_and_stores_none(
    make_model: MakeModel, open_manager: OpenManager
) -> None:
    model = make_model(quota=StorageQuota(max_files=2))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    record = await jobs.create(image_request(epoch, n=2, response_format="url"))  # room for 2 when accepted
    model.store.put_files(TENANT, {"img_other": b"png"}, 600, epoch)  # another request of the tenant, meanwhile
    assert await run_to_the_end(model, jobs, record.id)
    failed = stored(jobs, record.id)
    assert failed.status == "failed" and failed.result is None
    assert failed.error is not None and failed.error["code"] == "quota_exceeded"
    assert model.store.usage(TENANT, epoch).files == 1  # none of the job's images


async def test_a_job_whose_tenant_was_deleted_is_dropped_without_a_write(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch))
    model.store.delete_tenant(TENANT)
    model.store.create_tenant(TENANT)  # a new tenant of the same name must not receive the old one's job
    assert await run_to_the_end(model, jobs, record.id)  # final: nothing will ever be written
    assert model.store.get_job(TENANT, record.id) is None and not jobs.live
    again = model.store.get_tenant(TENANT)
    assert again is not None and model.store.usage(TENANT, again.epoch).jobs == 0


async def test_a_stored_job_runs_again_from_its_record_and_makes_the_same_images(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    first = await jobs.create(image_request(epoch, n=1))
    assert await run_to_the_end(model, jobs, first.id)
    made = stored(jobs, first.id)
    # the same stored request under another id, as a replica that claimed it would find it
    again = JobRecord(id="job_again", tenant=TENANT, epoch=epoch, request=made.request, owner="here", total=2)
    model.store.create_job(again, 600)
    task = await jobs.start_stored(again)
    assert task is not None and await model.drive(task)
    rerun = stored(jobs, "job_again")
    assert rerun.status == "succeeded" and made.result is not None and rerun.result is not None
    assert rerun.result["data"][0]["seed"] == made.result["data"][0]["seed"]
    assert np.array_equal(pixels(rerun.result["data"][0]), pixels(made.result["data"][0]))


async def test_a_stored_job_that_can_no_longer_be_planned_fails_at_once(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    model.upload(TENANT, "style", lora_file(model.info.spec))
    record = await jobs.create(image_request(epoch, adapters=[{"name": "style"}]))
    assert await run_to_the_end(model, jobs, record.id)
    model.store.delete_adapter(TENANT, "style")
    rerun = stored(jobs, record.id).model_copy(update={"id": "job_rerun", "status": "queued", "result": None})
    model.store.create_job(rerun, 600)
    assert await jobs.start_stored(rerun) is None  # nothing queued: it ended failed, saying why
    failed = stored(jobs, "job_rerun")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "adapter_not_found" and "'style' not found" in failed.error["message"]
    assert model.engine.load == 0


async def test_stop_lets_running_jobs_finish(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    record = await jobs.create(image_request(epoch))
    engine = asyncio.create_task(model.make_images())
    await jobs.stop(timeout=60)
    await engine
    assert stored(jobs, record.id).status == "succeeded"


async def test_a_stored_job_whose_plan_meets_a_store_outage_is_not_failed(
    model: LocalModel, jobs: JobManager, epoch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted before Redis went down, it must not end failed for the outage: the caller retries it later."""
    import redis

    record = await jobs.create(image_request(epoch))
    assert await run_to_the_end(model, jobs, record.id)
    rerun = stored(jobs, record.id).model_copy(update={"id": "job_outage", "status": "queued", "result": None})
    model.store.create_job(rerun, 600)

    def store_out(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(type(model.store), "list_adapters", store_out)
    with pytest.raises(redis.exceptions.ConnectionError):
        await jobs.start_stored(rerun)
    assert stored(jobs, "job_outage").status == "queued"  # not failed: still to run
    monkeypatch.undo()
    task = await jobs.start_stored(stored(jobs, "job_outage"))
    assert task is not None and await model.drive(task)
    assert stored(jobs, "job_outage").status == "succeeded"
