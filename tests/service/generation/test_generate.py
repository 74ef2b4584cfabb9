"""The one generate use case (service/generation/generate.py), driven without a server: a request made on this
replica's engine, or, on a replica without a model (role "api"), run as a job by a stream worker over the real
Redis, and answered the same way; a client that leaves frees its work (499)."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core.errors import ApiError
from service.core.settings import Settings
from service.generation.generate import ImageRequest, generate
from service.generation.params import ImageParams
from service.generation.plan import InvalidRequest
from service.jobs import JobManager
from service.runtime.torch_runtime import TorchRuntime
from service.stores import LocalStore, QuotaExceeded, RedisStore, StorageQuota
from service.stores.job_stream import JobStream
from service.worker import StreamWorker
from tests.service.generation.local_model import FAST, LocalModel, local_model

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/15"
SETTINGS = Settings(limits={"job_ttl_s": 600}, jobs={"result_poll_s": 0.02})


async def never_gone() -> None:
    await asyncio.Event().wait()


def request(epoch: str, **params: Any) -> ImageRequest:
    body = {"prompt": "a red circle", "n": 2, **FAST, **params}
    return ImageRequest(ImageParams(**body), "alice", epoch, "req-1", "http://diffplex.test")


def pixels(item: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))))


@pytest.fixture
def model(tiny_runtime: TorchRuntime, tmp_path: Path) -> Iterator[LocalModel]:
    model = local_model(tiny_runtime, SETTINGS, LocalStore(tmp_path / "data", StorageQuota(max_files=3)))
    yield model
    model.close()


@pytest.fixture
def epoch(model: LocalModel) -> str:
    return model.add_tenant("alice")


@pytest.fixture
def here(model: LocalModel) -> JobManager:
    """A replica that runs the model (role "all")."""
    return JobManager(model.store, model.runner, model.plan, SETTINGS)


async def test_a_request_is_made_here_and_made_the_same_again(model: LocalModel, here: JobManager, epoch: str) -> None:
    answer = await model.drive(generate(here, request(epoch, seed=5), never_gone))
    assert [item["seed"] for item in answer["data"]] == [5, 6] and isinstance(answer["created"], int)
    assert pixels(answer["data"][0]).shape == (16, 16, 3)
    again = await model.drive(generate(here, request(epoch, seed=5), never_gone))
    assert np.array_equal(pixels(again["data"][1]), pixels(answer["data"][1]))
    assert model.store.usage("alice", epoch).jobs == 0  # a synchronous request made here leaves no job record


async def test_url_images_are_stored_for_the_caller(model: LocalModel, here: JobManager, epoch: str) -> None:
    answer = await model.drive(generate(here, request(epoch, response_format="url"), never_gone))
    assert all(item["url"].startswith("http://diffplex.test/v1/files/img_") for item in answer["data"])
    assert model.store.usage("alice", epoch).files == 2


async def test_refusals_come_before_anything_is_queued(model: LocalModel, here: JobManager, epoch: str) -> None:
    with pytest.raises(InvalidRequest, match="adapter 'ghost' not found"):
        await generate(here, request(epoch, adapters=[{"name": "ghost"}]), never_gone)
    with pytest.raises(QuotaExceeded, match="url images"):  # 4 url images, room for 3: none is made
        await generate(here, request(epoch, n=4, response_format="url"), never_gone)
    assert model.engine.load == 0 and model.images_made("ok") + model.images_made("failed") == 0


async def test_a_client_that_leaves_frees_its_rows_and_is_answered_499(
    model: LocalModel, here: JobManager, epoch: str
) -> None:
    gone = asyncio.Event()
    answering = asyncio.create_task(generate(here, request(epoch, n=3), gone.wait))
    while model.engine.load < 3:  # queued; the engine has not run
        await asyncio.sleep(0.01)
    gone.set()
    with pytest.raises(ApiError) as left:
        await answering
    assert left.value.status == 499 and left.value.code == "client_closed"
    await model.make_images()
    assert model.engine.load == 0 and model.images_made("ok") == model.images_made("failed") == 0
    assert model.images_made("cancelled") == 3  # the client left: not a failure of the service


# -- a replica without a model (role "api") -------------------------------------------------------------------


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    store = RedisStore(REDIS_URL, f"test-{uuid.uuid4().hex[:12]}:")
    try:
        store.client.ping()
    except Exception:  # noqa: BLE001
        pytest.fail("Redis does not answer on 127.0.0.1:6379: run `make redis`")
    yield store
    for key in store.client.scan_iter(f"{store.prefix}*"):
        store.client.delete(key)
    store.close()


@pytest.fixture
def shared(tiny_runtime: TorchRuntime, redis_store: RedisStore) -> Iterator[LocalModel]:
    """The parts on the shared Redis store (the API replica plans with them; the worker runs them too)."""
    model = local_model(tiny_runtime, SETTINGS, redis_store)
    yield model
    model.close()


@pytest.fixture
def stream(redis_store: RedisStore) -> JobStream:
    stream = JobStream(redis_store)
    stream.ensure_group()
    return stream


@pytest.fixture
def api(shared: LocalModel, stream: JobStream) -> JobManager:
    return JobManager(shared.store, None, shared.plan, SETTINGS, stream, "api")


@pytest.fixture
async def worker(shared: LocalModel, stream: JobStream) -> AsyncIterator[StreamWorker]:
    """A stream worker (service/worker/consumer.py) on its own job manager and the engine's thread."""
    jobs = JobManager(shared.store, shared.runner, shared.plan, SETTINGS, stream, "worker-1")
    worker = StreamWorker(jobs, stream, shared.engine, SETTINGS)
    shared.engine.start()
    worker.start()
    yield worker
    await worker.drain(30)
    await asyncio.to_thread(shared.engine.stop, True, 30)


async def test_without_a_model_the_request_is_made_by_a_worker_then_forgotten(
    shared: LocalModel, api: JobManager, worker: StreamWorker
) -> None:
    epoch = shared.add_tenant("alice")
    answer = await generate(api, request(epoch, seed=8), never_gone)
    assert [item["seed"] for item in answer["data"]] == [8, 9]
    assert pixels(answer["data"][0]).shape == (16, 16, 3)
    assert shared.store.usage("alice", epoch).jobs == 0  # answered: its record holds no place in the quota


async def test_without_a_model_a_cancelled_job_is_answered_409(
    shared: LocalModel, api: JobManager, stream: JobStream
) -> None:
    epoch = shared.add_tenant("alice")
    answering = asyncio.create_task(generate(api, request(epoch), never_gone))
    taken: list = []
    while not taken:  # no worker: the test takes the entry, to learn the job's id
        taken = await asyncio.to_thread(stream.read, "test", 1, 100)
    await api.cancel("alice", taken[0].job_id)  # DELETE /v1/jobs/{id}: final at once, it never ran
    with pytest.raises(ApiError) as cancelled:
        await answering
    assert (cancelled.value.status, cancelled.value.code) == (409, "cancelled")
    assert shared.store.usage("alice", epoch).jobs == 0


async def test_without_a_model_a_client_that_leaves_cancels_its_job(
    shared: LocalModel, api: JobManager, stream: JobStream
) -> None:
    epoch = shared.add_tenant("alice")
    gone = asyncio.Event()
    answering = asyncio.create_task(generate(api, request(epoch), gone.wait))
    taken: list = []
    while not taken:
        taken = await asyncio.to_thread(stream.read, "test", 1, 100)
    gone.set()
    with pytest.raises(ApiError) as left:
        await answering
    assert left.value.status == 499
    record = shared.store.get_job("alice", taken[0].job_id)
    assert record is not None and record.status == "cancelled"  # a worker that reads it only acknowledges it
