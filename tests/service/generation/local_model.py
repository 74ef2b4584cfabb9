"""A replica's generation parts on the tiny backbone, without a server: a store (a LocalStore on a temporary
directory, or Redis), the real AdapterCache, a planner built like the app's (`ServiceState.plan`), and a real
Engine with its Runner.

The engine's thread is not started: a test makes the queued images (`make_images`) when it chooses, so what
it checks before (a cancel, a heartbeat, a refusal) happens while every image is still queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from adapters import ExportLimits
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.engine import Engine
from service.generation.params import ImageParams
from service.generation.plan import Plan, plan
from service.generation.runner import Runner
from service.hotload.cache import AdapterCache
from service.hotload.upload import inspect_upload
from service.runtime.base import BackboneInfo, Runtime
from service.stores.base import AdapterMeta, Quota, Store

T = TypeVar("T")

FAST = {"steps": 2, "size": "16x16"}  # the tiny backbone's native size; two steps are enough to make images


@dataclass
class LocalModel:
    settings: Settings
    store: Store
    info: BackboneInfo
    cache: AdapterCache
    engine: Engine
    runner: Runner

    def plan(
        self,
        params: ImageParams,
        tenant: str,
        epoch: str | None,
        request_id: str = "",
        init_image: np.ndarray | None = None,
        strength: float = 0.8,
    ) -> Plan:
        """The app's planner (`ServiceState.plan`) over these parts."""
        info = self.info
        return plan(
            params,
            tenant,
            self.store,
            self.cache,
            self.settings,
            info,
            init_image=init_image,
            strength=strength,
            request_id=request_id,
            epoch=epoch,
        )

    def add_tenant(self, name: str) -> str:
        """Create the tenant; its epoch."""
        self.store.create_tenant(name)
        tenant = self.store.get_tenant(name)
        assert tenant is not None
        return tenant.epoch

    def upload(self, tenant: str, name: str, data: bytes, token: str | None = None) -> AdapterMeta:
        """As `PUT /v1/adapters/{name}` stores it: inspected against the backbone, then written."""
        limits = ExportLimits(max_lora_rank=self.info.lora_rank, max_vpt_tokens=self.info.vpt_tokens)
        meta = inspect_upload(data, name, None, token, self.info.spec, limits, 1 << 24)
        self.store.put_adapter(tenant, meta, data, Quota(max_count=100, max_bytes=1 << 30))
        return meta

    async def make_images(self) -> None:
        """Run the engine until every queued image is made or dropped."""
        await asyncio.to_thread(self.engine.run_until_idle)

    async def drive(self, work: Awaitable[T]) -> T:
        """`work`'s result, the engine making whatever it queues meanwhile."""
        task = asyncio.ensure_future(work)
        while not task.done():
            await self.make_images()
            await asyncio.sleep(0.01)
        return task.result()

    def images_made(self, status: str = "ok") -> float:
        """Images the runner saw end with `status`: "ok", "failed" or "cancelled" (metrics.IMAGE_OUTCOMES)."""
        value = self.runner.metrics.registry.get_sample_value("diffplex_images_total", {"status": status})
        return value or 0.0

    def close(self) -> None:
        self.cache.close()
        self.store.close()


def local_model(runtime: Runtime, settings: Settings, store: Store) -> LocalModel:
    info = runtime.info
    metrics = Metrics()
    limits = ExportLimits(max_lora_rank=info.lora_rank, max_vpt_tokens=info.vpt_tokens)
    cache = AdapterCache(store, info.spec, limits, settings.adapter_cache_bytes, metrics)
    engine = Engine(runtime, settings.engine, settings.fairness)  # as the app builds it (boot/model.py)
    return LocalModel(settings, store, info, cache, engine, Runner(engine, metrics))
