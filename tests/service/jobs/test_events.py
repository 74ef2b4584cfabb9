"""A job's events (service/jobs/events.py): queued, steps in order, then done or error; followed live on the
replica that runs it, and through the store from any other."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.jobs import JobManager
from service.jobs.heartbeat import beat
from tests.service.generation.local_model import LocalModel
from tests.service.jobs.conftest import TENANT, OpenManager, image_request

pytestmark = pytest.mark.anyio

Events = list[tuple[str, dict[str, Any]]]


async def collect(jobs: JobManager, tenant: str, job_id: str, into: Events) -> Events:
    async for event in jobs.events(tenant, job_id):
        if event[0] != "keepalive":
            into.append(event)
    return into


async def test_a_job_running_here_streams_every_step_then_its_result(
    model: LocalModel, jobs: JobManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch, n=1, steps=4, seed=3))
    events = await model.drive(collect(jobs, TENANT, record.id, []))
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "done" and set(names[1:-1]) == {"step"}, names
    steps = [data["step"] for name, data in events if name == "step"]
    assert steps == sorted(steps) and steps[-1] == 4 and all(data["total"] == 4 for _, data in events[1:-1])
    assert events[-1][1]["result"]["data"][0]["seed"] == 3


async def test_a_cancelled_job_ends_with_an_error_event(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    record = await jobs.create(image_request(epoch))
    await jobs.cancel(TENANT, record.id)
    events = await model.drive(collect(jobs, TENANT, record.id, []))
    name, data = events[-1]
    assert name == "error" and data["status"] == "cancelled" and data["error"]["code"] == "cancelled"


async def test_another_tenants_job_has_no_events(model: LocalModel, jobs: JobManager, epoch: str) -> None:
    model.add_tenant("bob")
    record = await jobs.create(image_request(epoch))
    assert await collect(jobs, "bob", record.id, []) == []
    assert await collect(jobs, TENANT, "job_missing", []) == []


async def test_a_job_running_on_another_replica_is_followed_through_the_store(
    model: LocalModel, jobs: JobManager, open_manager: OpenManager, epoch: str
) -> None:
    record = await jobs.create(image_request(epoch, n=1, steps=20))
    reader = open_manager(replica="reader")  # same store, runs nothing of this job
    events: Events = []
    following = asyncio.create_task(collect(reader, TENANT, record.id, events))
    deadline = asyncio.get_running_loop().time() + 30
    while not any(name == "step" for name, _ in events):  # a few steps, heart-beaten, until the reader sees one
        assert asyncio.get_running_loop().time() < deadline, events
        await asyncio.to_thread(model.engine.tick)
        await beat(jobs.live, jobs.store, jobs.ttl_s)
        await asyncio.sleep(0.1)
    await model.drive(following)
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "done", names
    assert 0 < events[1][1]["step"] < 20
