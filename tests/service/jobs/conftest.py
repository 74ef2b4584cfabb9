"""Job managers driven directly, without a server: a real store (a LocalStore on a temporary directory, or
Redis for the job stream), the real planner and a real engine on the tiny backbone, made to run only when a
test says so (tests/service/generation/local_model.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from service.core.settings import Settings
from service.generation.generate import ImageRequest
from service.generation.params import ImageParams
from service.jobs import JobManager
from service.runtime.torch_runtime import TorchRuntime
from service.stores import LocalStore, RedisStore
from service.stores.base import StorageQuota, Store
from service.stores.job_stream import JobStream
from tests.service.generation.local_model import FAST, LocalModel, local_model

REDIS_URL = "redis://127.0.0.1:6379/15"
TENANT = "alice"

MakeModel = Callable[..., LocalModel]
OpenManager = Callable[..., JobManager]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_runtime(tiny_model_dir: Path) -> TorchRuntime:
    return TorchRuntime(tiny_model_dir, lora_rank=4, vpt_tokens=3)


def settings_with(**fields: Any) -> Settings:
    """The defaults, records kept 10 minutes, and `fields` (e.g. `fairness={"max_tenant_work": 4}`)."""
    return Settings(limits={"job_ttl_s": 600}, **fields)


@pytest.fixture
def settings() -> Settings:
    return settings_with()


@pytest.fixture
def make_model(tiny_runtime: TorchRuntime, tmp_path: Path, settings: Settings) -> Iterator[MakeModel]:
    """`make(store=None, settings=None, quota=None)`: a replica's parts; its own LocalStore (with `quota`) unless
    it is given one (two replicas share a store)."""
    made: list[LocalModel] = []

    def make(
        store: Store | None = None, config: Settings | None = None, quota: StorageQuota | None = None
    ) -> LocalModel:
        if store is None:
            store = LocalStore(tmp_path / f"data-{len(made)}", quota)
        made.append(local_model(tiny_runtime, config or settings, store))
        return made[-1]

    yield make
    for model in made:
        model.close()


@pytest.fixture
def model(make_model: MakeModel) -> LocalModel:
    return make_model()


@pytest.fixture
def epoch(model: LocalModel) -> str:
    return model.add_tenant(TENANT)


def image_request(epoch: str, tenant: str = TENANT, **params: Any) -> ImageRequest:
    """A request of `tenant`'s incarnation `epoch`: two 16x16 images of two steps unless `params` say otherwise."""
    body = {"prompt": "a red circle", "n": 2, **FAST, **params}
    return ImageRequest(ImageParams(**body), tenant, epoch, "req-1", "http://diffplex.test")


@pytest.fixture
async def open_manager(model: LocalModel) -> AsyncIterator[OpenManager]:
    """`open_manager(on=model, replica="here", stream=None, runs_model=True)`: a replica's job manager, its
    loops not started (a test calls what they would do). `runs_model=False`: a replica of role "api", which
    hands every job to the workers through `stream`. The jobs a test leaves running are run to their end
    afterwards: no task outlives its event loop."""
    opened: list[tuple[LocalModel, JobManager]] = []

    def open_one(
        on: LocalModel | None = None, replica: str = "here", stream: JobStream | None = None, runs_model: bool = True
    ) -> JobManager:
        on = on or model
        jobs = JobManager(on.store, on.runner if runs_model else None, on.plan, on.settings, stream, replica)
        opened.append((on, jobs))
        return jobs

    yield open_one
    for on, jobs in opened:
        await on.drive(jobs.stop(30))


@pytest.fixture
def jobs(open_manager: OpenManager) -> JobManager:
    return open_manager()


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    """A RedisStore under a unique key prefix, deleted afterwards."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        pytest.fail("Redis does not answer on 127.0.0.1:6379: run `make redis`")
    store = RedisStore(REDIS_URL, f"test-{uuid.uuid4().hex[:12]}:")
    yield store
    for key in store.client.scan_iter(f"{store.prefix}*"):
        store.client.delete(key)
    store.close()
