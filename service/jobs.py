"""Asynchronous jobs: `POST /v1/jobs` answers 202 at once; the images are made in the background.

A job is persisted (with the request that made it) before it is acknowledged, and its owner replica
heart-beats it while it runs. Every replica periodically claims jobs whose owner stopped heart-beating
(a crash) and runs them again from the stored request, so an accepted job is never lost: it ends as
succeeded, failed (with the reason) or cancelled. Progress lives in memory on the owner (every step, for
SSE) and is written to the store on each heartbeat, where other replicas read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from service.engine import Cancelled, QueueFull
from service.errors import as_api_error
from service.generation import Plan
from service.params import ImageParams
from service.results import render
from service.runner import Batch, Runner
from service.settings import Settings
from service.stores.base import JobRecord, Store

log = logging.getLogger(__name__)

SSE_KEEPALIVE_S = 15.0
FINAL_WRITE_ATTEMPTS = 6
REMOTE_POLL_S = 0.5

Planner = Callable[[ImageParams, str, str], Plan]  # (params, tenant, request id) -> plan; blocking


class LiveJob:
    """A job this replica runs: its record, kept current from the engine thread via the event loop."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.batch: Batch | None = None
        self.dirty = True
        self.version = 0
        self.lock = asyncio.Lock()  # one write at a time: a heartbeat never lands after the final state
        self._changed = asyncio.Event()

    def touch(self) -> None:
        self.record.updated = time.time()
        self.dirty = True
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()  # one Event per change: every waiter wakes once

    def progress(self, step: int, total: int) -> None:
        if self.record.terminal:
            return
        self.record.status, self.record.step, self.record.total = "running", step, total
        self.touch()

    def snapshot(self) -> tuple[int, JobRecord]:
        return self.version, self.record.model_copy()

    async def wait_past(self, version: int, timeout: float) -> bool:
        """Until the job changed after `version` (at once if it already has); False on timeout."""
        if self.version != version:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        return False


def error_body(error: BaseException) -> dict[str, Any]:
    mapped = as_api_error(error) if isinstance(error, Exception) else None
    if mapped is None:
        return {"message": f"the job failed: {error}", "type": "server_error", "param": None, "code": None}
    return {"message": mapped.message, "type": mapped.type, "param": mapped.param, "code": mapped.code}


class JobManager:
    def __init__(self, store: Store, runner: Runner, planner: Planner, settings: Settings) -> None:
        self.store = store
        self.runner = runner
        self.planner = planner
        self.settings = settings
        self.ttl_s = settings.limits.job_ttl_s
        self.timing = settings.jobs  # heartbeat (progress written, cancel flags read), staleness, recovery
        self.replica = uuid.uuid4().hex[:12]
        self.live: dict[str, LiveJob] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loops = [asyncio.create_task(self._heartbeat_loop()), asyncio.create_task(self._recovery_loop())]

    async def stop(self, timeout: float) -> None:
        """Let running jobs finish (drain) up to `timeout`; what is left is re-run by another replica."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in self._loops:
            task.cancel()
        for live in list(self.live.values()):  # last progress on record, for whoever picks them up
            await self._persist(live)

    # -- creating and following jobs ----------------------------------------------------------------------
    async def create(self, tenant: str, params: ImageParams, base_url: str, request_id: str) -> JobRecord:
        """Validated and queued before it is acknowledged: a 4xx or 503 here means nothing was accepted."""
        plan = await asyncio.to_thread(self.planner, params, tenant, request_id)
        resolved = params.model_copy(update={"seed": plan.requests[0].seed})  # a re-run makes the same images
        record = JobRecord(
            id=f"job_{secrets.token_hex(12)}",
            tenant=tenant,
            request={"params": resolved.model_dump(mode="json"), "base_url": base_url},
            owner=self.replica,
            total=sum(r.steps for r in plan.requests),
        )
        live = LiveJob(record)
        batch = self._submit(live, plan)
        try:
            await asyncio.to_thread(self.store.put_job, record.model_copy(), self.ttl_s)
        except BaseException:
            batch.cancel()
            self.live.pop(record.id, None)
            raise
        self._follow(live, plan, batch)
        return record.model_copy()

    def _submit(self, live: LiveJob, plan: Plan) -> Batch:
        loop = asyncio.get_running_loop()
        batch = self.runner.submit(plan.requests, lambda s, t: loop.call_soon_threadsafe(live.progress, s, t))
        live.batch = batch
        self.live[live.record.id] = live
        return batch

    def _follow(self, live: LiveJob, plan: Plan, batch: Batch) -> None:
        task = asyncio.create_task(self._run(live, plan, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, live: LiveJob, plan: Plan, batch: Batch) -> None:
        record = live.record
        try:
            results = await self.runner.wait(batch)
            data = await asyncio.to_thread(
                render,
                results,
                plan.revised_prompt,
                plan.response_format,
                record.tenant,
                self.store,
                record.request.get("base_url", ""),
                self.ttl_s,
            )
            record.result = {"created": int(time.time()), "data": data}
            record.status, record.step = "succeeded", record.total
        except Cancelled:
            record.status = "cancelled"
            record.error = {
                "message": "the job was cancelled",
                "type": "invalid_request_error",
                "param": None,
                "code": "cancelled",
            }
        except Exception as error:  # noqa: BLE001 - recorded on the job: the client reads it there
            log.warning("job failed", extra={"job": record.id, "error": str(error)})
            record.status, record.error = "failed", error_body(error)
        live.touch()
        for attempt in range(FINAL_WRITE_ATTEMPTS):  # the outcome must reach the store: it is all a poller sees
            if await self._persist(live):
                break
            await asyncio.sleep(0.5 * 2**attempt)
        self.live.pop(record.id, None)

    async def _persist(self, live: LiveJob) -> bool:
        """Write progress and heartbeat; read back a cancel request made on another replica. False when the
        store could not be written (the next heartbeat tries again)."""
        async with live.lock:
            live.record.heartbeat = time.time()
            live.dirty = False
            snapshot = live.record.model_copy()
            try:
                stored = await asyncio.to_thread(self.store.get_job, snapshot.tenant, snapshot.id)
                if stored is not None and stored.cancel_requested and not snapshot.terminal:
                    live.record.cancel_requested = snapshot.cancel_requested = True
                    if live.batch is not None:
                        live.batch.cancel()
                await asyncio.to_thread(self.store.put_job, snapshot, self.ttl_s)
            except Exception:  # noqa: BLE001 - a store hiccup: the next heartbeat writes again
                log.exception("could not persist job", extra={"job": snapshot.id})
                live.dirty = True
                return False
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat_s)
            for live in list(self.live.values()):
                if not live.record.terminal:
                    await self._persist(live)

    async def _recovery_loop(self) -> None:
        while True:
            try:
                claimed = await asyncio.to_thread(
                    self.store.claim_stale_jobs, self.replica, self.timing.stale_after_s, self.ttl_s
                )
                for record in claimed:
                    await self._resume(record)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("job recovery failed")
            await asyncio.sleep(self.timing.recovery_every_s)

    async def _resume(self, record: JobRecord) -> None:
        """Run a crashed replica's job again from its stored request."""
        log.info("resuming job", extra={"job": record.id, "previous_step": record.step})
        live = LiveJob(record)
        record.status, record.step = "queued", 0
        try:
            params = ImageParams.model_validate(record.request.get("params", {}))
            plan = await asyncio.to_thread(self.planner, params, record.tenant, record.id)
            batch = self._submit(live, plan)
        except QueueFull:
            record.heartbeat = 0.0  # claimable again on the next round, here or elsewhere
            await asyncio.to_thread(self.store.put_job, record, self.ttl_s)
            return
        except Exception as error:  # noqa: BLE001 - e.g. its adapter was deleted meanwhile
            record.status, record.error = "failed", error_body(error)
            await asyncio.to_thread(self.store.put_job, record, self.ttl_s)
            return
        self._follow(live, plan, batch)

    # -- reading and cancelling ---------------------------------------------------------------------------
    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        live = self.live.get(job_id)
        if live is not None:
            return live.record.model_copy() if live.record.tenant == tenant else None
        return await asyncio.to_thread(self.store.get_job, tenant, job_id)

    async def cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        record = await asyncio.to_thread(self.store.request_cancel, tenant, job_id)
        live = self.live.get(job_id)
        if record is not None and live is not None and live.batch is not None:
            live.record.cancel_requested = True
            live.batch.cancel()  # on this replica at once; elsewhere at the owner's next heartbeat
        return record

    async def events(self, tenant: str, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, data): the current state first, then `step` on progress, then `done` or `error`;
        ("keepalive", {}) when nothing happened for a while (proxies close silent connections)."""
        record = await self.get(tenant, job_id)
        if record is None:
            return
        last: tuple[str, int] | None = None
        polls = 0
        while True:
            live = self.live.get(job_id)
            version = -1
            if live is not None and live.record.tenant == tenant:
                version, record = live.snapshot()
            if record.terminal:
                if record.status == "succeeded":
                    yield "done", {"id": record.id, "status": record.status, "result": record.result}
                else:
                    yield "error", {"id": record.id, "status": record.status, "error": record.error}
                return
            state = (record.status, record.step)
            if state != last:
                if last is None and record.status == "queued":
                    yield "queued", {"id": record.id, "status": "queued", "total": record.total}
                else:
                    yield "step", {"id": record.id, "step": record.step, "total": record.total}
                last = state
            if live is not None:
                if not await live.wait_past(version, SSE_KEEPALIVE_S):
                    yield "keepalive", {}
                if job_id in self.live:
                    continue  # re-read the live snapshot
            else:
                await asyncio.sleep(REMOTE_POLL_S)
                polls += 1
                if polls % int(SSE_KEEPALIVE_S / REMOTE_POLL_S) == 0:
                    yield "keepalive", {}
            latest = await self.get(tenant, job_id)
            if latest is None:  # expired meanwhile
                yield "error", {"id": job_id, "status": "failed", "error": {"message": "the job expired"}}
                return
            record = latest
