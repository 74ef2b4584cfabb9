"""`JobManager`: this replica's jobs as one object, for the routes, the stream worker and the start-up code.

`POST /v1/jobs` answers 202 at once and the images are made in the background. Each part has its own file:
- create.py: accepting a job (quotas, plan, stored or enqueued before it is acknowledged);
- run.py: running it on the engine and writing its outcome (outcome.py: the one final write);
- heartbeat.py: progress and a sign of life written while it runs, cancel requests read back (the store's
  cancel notifications, heard here by `start`, reach the run sooner: run.py);
- recover.py: re-running the jobs of a replica that stopped heart-beating (embedded mode);
- records.py: reading, awaiting, cancelling and forgetting a tenant's jobs; events.py: following one (SSE).

With Redis, jobs go through the job stream instead (stores/job_stream.py): `create` enqueues, and the
`diffplex worker`s (or the in-process worker of role "all", service/worker/) take them with `start_stored`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from service.core.settings import Settings
from service.generation.generate import ImageRequest, Planner
from service.generation.images import MAX_SIDE
from service.generation.runner import Runner
from service.jobs.create import JobCreator
from service.jobs.events import job_events
from service.jobs.heartbeat import heartbeat_loop, persist
from service.jobs.live import LiveJob
from service.jobs.outcome import finish
from service.jobs.records import JobRecords
from service.jobs.recover import recover_stale, recovery_loop
from service.jobs.run import JobRunner
from service.stores.base import JobRecord, Store
from service.stores.job_stream import JobStream

# How long `DELETE /v1/jobs/{id}` waits for the job's final record, in heartbeats: enough for a runner that
# missed the store's cancel notification to hear of it at its next heartbeat, stop and write the record.
CANCEL_WAIT_HEARTBEATS = 2.0


class JobManager:
    def __init__(
        self,
        store: Store,
        runner: Runner | None,
        planner: Planner,
        settings: Settings,
        stream: JobStream | None = None,
        replica: str | None = None,
        max_image_side: int = MAX_SIDE,
    ) -> None:
        self.store = store
        self.runner = runner  # None: this replica runs no model (role "api": `stream` is set and takes every job)
        self.planner = planner
        self.settings = settings
        self.stream = stream  # set: jobs are enqueued for workers instead of run here
        self.ttl_s = settings.limits.job_ttl_s
        self.timing = settings.jobs  # heartbeat (progress written, cancel flags read), staleness, recovery
        self.replica = replica or uuid.uuid4().hex[:12]
        self.runs = JobRunner(store, runner, planner, self.ttl_s, self.replica, max_image_side)
        self.creator = JobCreator(self.runs, settings, stream)
        cancel_wait_s = CANCEL_WAIT_HEARTBEATS * self.timing.heartbeat_s
        self.records = JobRecords(self.runs, self.timing.result_poll_s, cancel_wait_s)
        self._loops: list[asyncio.Task] = []
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def live(self) -> dict[str, LiveJob]:
        """The jobs running on this replica, by id."""
        return self.runs.live

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, recover: bool = True) -> None:
        """`recover`: re-run jobs of replicas that stopped heart-beating (embedded mode; with the job stream,
        workers reclaim stream entries instead)."""
        loop = asyncio.get_running_loop()

        def heard(job_id: str) -> None:  # on the store's listener thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing runs here any more
                loop.call_soon_threadsafe(self.runs.cancel_heard, job_id)

        self._unsubscribe = self.store.subscribe_cancels(heard)
        self._loops = [asyncio.create_task(heartbeat_loop(self.live, self.store, self.ttl_s, self.timing.heartbeat_s))]
        if recover:
            every_s = self.timing.recovery_every_s
            self._loops.append(asyncio.create_task(recovery_loop(self.runs, self.timing.stale_after_s, every_s)))

    async def stop(self, timeout: float) -> None:
        """Let running jobs finish (drain) up to `timeout`; what is left is re-run by another replica."""
        await self.runs.drain(timeout)
        for task in self._loops:
            task.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for live in list(self.live.values()):  # last progress on record, for whoever picks them up
            await persist(live, self.store, self.ttl_s)

    # -- the parts, as one object -------------------------------------------------------------------------
    async def create(self, request: ImageRequest) -> JobRecord:
        return await self.creator.create(request)

    async def start_stored(self, record: JobRecord) -> asyncio.Task[bool] | None:
        return await self.runs.start_stored(record)

    async def recover_stale(self) -> list[JobRecord]:
        return await recover_stale(self.runs, self.timing.stale_after_s)

    async def finish(self, record: JobRecord) -> bool:
        return await finish(self.store, record, self.ttl_s, self.replica)

    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        return await self.records.get(tenant, job_id)

    async def cancel(self, tenant: str, job_id: str, settle: bool = True) -> JobRecord | None:
        return await self.records.cancel(tenant, job_id, settle)

    async def wait(self, tenant: str, job_id: str) -> JobRecord | None:
        return await self.records.wait(tenant, job_id)

    async def forget(self, tenant: str, job_id: str) -> None:
        await self.records.forget(tenant, job_id)

    def events(self, tenant: str, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return job_events(self.records, tenant, job_id)
