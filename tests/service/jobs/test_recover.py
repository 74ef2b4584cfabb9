"""Recovery (service/jobs/recover.py): the jobs of a replica that stopped heart-beating are claimed by another,
which runs them again from their stored request; a job that cannot be queued now stays claimable."""

from __future__ import annotations

import time

import pytest

from service.jobs import JobManager
from service.jobs.stored import stored_request
from service.stores.base import JobRecord
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, MakeModel, OpenManager, image_request, settings_with

pytestmark = pytest.mark.anyio

STALE_AFTER_S = 30.0  # the default `jobs.stale_after_s`


def job_of_a_dead_replica(model: LocalModel, epoch: str, job_id: str, silent_for_s: float) -> JobRecord:
    """A job accepted by replica "dead", which last heart-beat it `silent_for_s` ago (its seed resolved)."""
    request = stored_request(image_request(epoch, n=2, steps=2), seed=21)
    record = JobRecord(id=job_id, tenant=TENANT, epoch=epoch, request=request, owner="dead", total=4)
    record.heartbeat = time.time() - silent_for_s
    model.store.create_job(record, 600)
    return record


async def test_a_crashed_replicas_job_is_claimed_and_finished_here(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    job_of_a_dead_replica(model, epoch, "job_stale", silent_for_s=STALE_AFTER_S + 1)
    job_of_a_dead_replica(model, epoch, "job_alive", silent_for_s=1)  # its owner is only between heartbeats
    claimed = await jobs.recover_stale()
    assert [r.id for r in claimed] == ["job_stale"] and list(jobs.live) == ["job_stale"]
    assert await model.drive(jobs.runs.tasks["job_stale"])
    done = jobs.store.get_job(TENANT, "job_stale")
    assert done is not None and done.status == "succeeded" and done.owner == "here"
    assert done.result is not None and [d["seed"] for d in done.result["data"]] == [21, 22]  # the stored seeds
    alive = jobs.store.get_job(TENANT, "job_alive")
    assert alive is not None and (alive.owner, alive.status) == ("dead", "queued")


async def test_a_claimed_job_the_engine_has_no_room_for_stays_claimable(
    make_model: MakeModel, open_manager: OpenManager
) -> None:
    model = make_model(config=settings_with(engine={"max_queue": 1}))
    epoch = model.add_tenant(TENANT)
    jobs = open_manager(model)
    job_of_a_dead_replica(model, epoch, "job_stale", silent_for_s=STALE_AFTER_S + 1)  # 2 images: over the queue
    assert [r.id for r in await jobs.recover_stale()] == ["job_stale"]
    assert not jobs.live and model.engine.load == 0
    left = jobs.store.get_job(TENANT, "job_stale")
    assert left is not None and left.heartbeat == 0.0 and not left.terminal  # the next round claims it again
    assert [r.id for r in await open_manager(model, replica="another").recover_stale()] == ["job_stale"]
