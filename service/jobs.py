"""Asynchronous jobs: `POST /v1/jobs` answers 202 at once; the images are made in the background.

A job is persisted (with the request that made it) before it is acknowledged, and its owner replica
heart-beats it while it runs. Every replica periodically claims jobs whose owner stopped heart-beating
(a crash) and runs them again from the stored request, so an accepted job is never lost: it ends as
succeeded, failed (with the reason) or cancelled. Progress lives in memory on the owner (every step, for
SSE) and is written to the store on each heartbeat, where other replicas read it.

With Redis, jobs go through the job stream instead (stores/job_stream.py): `create` enqueues, and the
`diffplex worker`s (or the in-process worker of role "all", service/worker/) take them with `start_stored`.
Every write after the creation is conditional (stores/job_updates.py): a runner that lost its job (presumed
dead and reclaimed) stops at its next heartbeat, and the final record is written once. A job carries its
tenant's epoch (stores/base.py): once the tenant is deleted, its store writes raise TenantGone and the run is
dropped (its engine rows cancelled, its images and record never written), even if a tenant of the same name
exists again by then.

What a tenant may hold is checked when a job is created: its live job records by count and bytes (the store's
quota, checked atomically with the record's write: over it, 403 and nothing stored), room for its images when
they are stored (url format; checked again when they are written: a job whose images no longer fit fails with
quota_exceeded and stores none), and, with the job stream, its unfinished work: jobs wait in Redis there, not
in this replica's engine, so the store's sum of their `total` stands in for the engine's per-tenant cap
(TenantBusy, 429). An accepted job is never dropped: a b64_json job keeps its images in its record, and if
they do not fit the tenant's job bytes when it finishes (too many, or other jobs filled them meanwhile), the
store refuses that final write and the job ends failed with quota_exceeded, without its images (`finish`). Its
outcome is shown (GET, events) only once stored, so nobody is shown images its record does not keep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from service.engine import Cancelled, QueueFull, TenantBusy
from service.errors import as_api_error
from service.generation import Plan
from service.images import MAX_SIDE, decode_image
from service.params import ImageParams
from service.results import check_file_room, render
from service.runner import Batch, Runner
from service.settings import Settings
from service.stores.base import JobRecord, QuotaExceeded, Store, TenantGone, WorkCapExceeded, check_epoch
from service.stores.job_stream import JobStream
from service.stores.usage import check_job

log = logging.getLogger(__name__)

SSE_KEEPALIVE_S = 15.0
FINAL_WRITE_ATTEMPTS = 6
REMOTE_POLL_S = 0.5
# Retry-After of a job refused for its tenant's unfinished work in the stream: a rough estimate. Its jobs wait
# for workers this replica does not see, so it cannot tell when some finish; a capped tenant's work is a few
# of its largest jobs, the first of which a worker usually ends within seconds.
BUSY_RETRY_AFTER_S = 5.0

CANCELLED = {"message": "the job was cancelled", "type": "invalid_request_error", "param": None, "code": "cancelled"}

# (params, tenant, request id, init image or None, strength) -> plan; blocking
# (params, tenant, epoch: the incarnation whose adapters it may use, request id, init image, strength)
Planner = Callable[[ImageParams, str, str | None, str, Any, float], Plan]


class LiveJob:
    """A job this replica runs: its record, kept current from the engine thread via the event loop."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.batch: Batch | None = None
        self.lost = False  # another runner owns or finished the job: this run ends without writing
        self.orphaned = False  # its tenant was deleted: this run ends without writing
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


def log_dropped(job_id: str, tenant: str) -> None:
    log.info("job of a deleted tenant dropped", extra={"job": job_id, "tenant": tenant})


def error_body(error: BaseException) -> dict[str, Any]:
    mapped = as_api_error(error) if isinstance(error, Exception) else None
    if mapped is None:
        return {"message": f"the job failed: {error}", "type": "server_error", "param": None, "code": None}
    return {"message": mapped.message, "type": mapped.type, "param": mapped.param, "code": mapped.code}


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
        self.max_image_side = max_image_side  # img2img sources: refused from their header beyond it
        self.stream = stream  # set: jobs are enqueued for workers instead of run here
        self.runner = runner  # None: this replica runs no model (role "api": `stream` is set and takes every job)
        self.planner = planner
        self.settings = settings
        self.ttl_s = settings.limits.job_ttl_s
        self.timing = settings.jobs  # heartbeat (progress written, cancel flags read), staleness, recovery
        self.replica = replica or uuid.uuid4().hex[:12]
        self.live: dict[str, LiveJob] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, recover: bool = True) -> None:
        """`recover`: re-run jobs of replicas that stopped heart-beating (embedded mode; with the job stream,
        workers reclaim stream entries instead)."""
        self._loops = [asyncio.create_task(self._heartbeat_loop())]
        if recover:
            self._loops.append(asyncio.create_task(self._recovery_loop()))

    async def stop(self, timeout: float) -> None:
        """Let running jobs finish (drain) up to `timeout`; what is left is re-run by another replica."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in self._loops:
            task.cancel()
        for live in list(self.live.values()):  # last progress on record, for whoever picks them up
            await self._persist(live)

    # -- creating and following jobs ----------------------------------------------------------------------
    async def create(
        self,
        tenant: str,
        epoch: str,
        params: ImageParams,
        base_url: str,
        request_id: str,
        image: bytes | None = None,
        strength: float = 0.8,
    ) -> JobRecord:
        """Validated and queued before it is acknowledged: a 4xx or 503 here means nothing was accepted.
        `epoch`: the tenant incarnation the request authenticated as; the job's record carries it, so the store
        refuses it (TenantGone) if that incarnation was deleted, even if the name exists again. `image` (the
        uploaded file) and `strength` make it image-to-image."""
        incarnation = await asyncio.to_thread(self.store.get_tenant, tenant)
        # deleted since it authenticated: refused before any work (the store's writes check again, atomically)
        check_epoch(tenant, epoch, None if incarnation is None else incarnation.epoch)
        await asyncio.to_thread(self._check_room, tenant, epoch, params)
        pixels = None if image is None else await asyncio.to_thread(decode_image, image, self.max_image_side)
        plan = await asyncio.to_thread(self.planner, params, tenant, epoch, request_id, pixels, strength)
        resolved = params.model_copy(update={"seed": plan.requests[0].seed})  # a re-run makes the same images
        request: dict[str, Any] = {"params": resolved.model_dump(mode="json"), "base_url": base_url}
        if image is not None:
            request |= {"image": base64.b64encode(image).decode(), "strength": strength}
        record = JobRecord(
            id=f"job_{secrets.token_hex(12)}",
            tenant=tenant,
            epoch=epoch,
            request=request,
            owner="" if self.stream is not None else self.replica,  # a worker becomes the owner
            total=sum(r.steps for r in plan.requests),
        )
        if self.stream is not None:
            try:
                await asyncio.to_thread(self.stream.enqueue, record.model_copy(), self.ttl_s, self.max_work(tenant))
            except WorkCapExceeded as busy:
                raise TenantBusy(str(busy), BUSY_RETRY_AFTER_S) from None
            return record
        live = LiveJob(record)
        batch = self._submit(live, plan)  # the engine refuses a busy tenant (TenantBusy) before anything is stored
        try:
            await asyncio.to_thread(self.store.create_job, record.model_copy(), self.ttl_s)
        except BaseException:
            batch.cancel()
            self.live.pop(record.id, None)
            raise
        self._follow(live, plan, batch)
        return record.model_copy()

    def _check_room(self, tenant: str, epoch: str, params: ImageParams) -> None:
        """Blocking. Refused before it is planned when the tenant holds its quota of job records (by count, or
        at its bytes), or has no room left for its url images; the store checks the record again, atomically,
        when it writes it."""
        usage = self.store.usage(tenant, epoch)
        check_job(usage, self.store.quota, self.ttl_s, time.time())
        check_file_room(self.store, tenant, epoch, params.response_format, params.n, usage)

    def max_work(self, tenant: str) -> int:
        """Images x steps the tenant may have unfinished in the job stream: the engine's per-tenant cap, weighted."""
        fairness = self.settings.fairness
        return int(fairness.max_tenant_work * fairness.weights.get(tenant, 1.0))

    async def forget(self, tenant: str, job_id: str) -> None:
        """Remove a finished job's record: a synchronous request's (role "api") once it was answered. Its id was
        never shown, and kept it would hold a place in the tenant's job quota for `job_ttl_s`. Best effort: a
        store hiccup leaves it to expire."""
        try:
            await asyncio.to_thread(self.store.delete_job, tenant, job_id)
        except Exception:  # noqa: BLE001 - the request was answered already; the record expires anyway
            log.warning("could not remove an answered request's job record", extra={"job": job_id})

    def _submit(self, live: LiveJob, plan: Plan, capped: bool = True) -> Batch:
        """`capped=False`: a stored job, accepted already, is queued even over its tenant's work cap."""
        if self.runner is None:
            raise RuntimeError("this replica runs no model (role api): jobs go to the workers through the stream")
        loop = asyncio.get_running_loop()

        def progress(step: int, total: int) -> None:  # from the engine thread
            loop.call_soon_threadsafe(live.progress, step, total)

        batch = self.runner.submit(plan.requests, progress, capped=capped)
        live.batch = batch
        self.live[live.record.id] = live
        return batch

    def _follow(self, live: LiveJob, plan: Plan, batch: Batch) -> asyncio.Task[bool]:
        task = asyncio.create_task(self._run(live, plan, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _plan_stored(self, record: JobRecord) -> Plan:
        """Blocking: the plan of a stored job, as its request was accepted (seeds resolved, image included)."""
        params = ImageParams.model_validate(record.request.get("params", {}))
        image = record.request.get("image")
        pixels = None if image is None else decode_image(base64.b64decode(image), self.max_image_side)
        strength = float(record.request.get("strength", 0.8))
        return self.planner(params, record.tenant, record.epoch, record.id, pixels, strength)

    async def _run(self, live: LiveJob, plan: Plan, batch: Batch) -> bool:
        """Run to the end and write the outcome; True once the job's record is final (by this run or another:
        its queue entry may then be acknowledged)."""
        record = live.record
        # the outcome, kept off `live.record` until stored: the store may turn a result into a failure (finish)
        final: JobRecord | None = None
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
                record.epoch,  # refused once the tenant is deleted, whoever has its name now
            )
            result = {"created": int(time.time()), "data": data}
            final = record.model_copy(update={"result": result, "status": "succeeded", "step": record.total})
        except Cancelled:
            final = record.model_copy(update={"status": "cancelled", "error": CANCELLED})
        except TenantGone:
            live.orphaned = True
        except Exception as error:  # noqa: BLE001 - recorded on the job: the client reads it there
            log.warning("job failed", extra={"job": record.id, "error": str(error)})
            final = record.model_copy(update={"status": "failed", "error": error_body(error)})
        try:
            if live.orphaned or final is None:  # engine rows finished or cancelled; their output goes nowhere
                log_dropped(record.id, record.tenant)
                return True  # nothing will ever be written: its queue entry may be acknowledged
            if live.lost:
                log.info("duplicate run dropped", extra={"job": record.id, "owner": self.replica})
                return False
            final.updated = time.time()
            done = await self.finish(final)
            live.record = final  # as stored (or as it will be retried), shown until `live` is dropped below
            return done
        finally:
            self.live.pop(record.id, None)
            live.touch()  # its followers (events) read it again: from the store now

    async def finish(self, record: JobRecord) -> bool:
        """Write a final record at most once (retried through store hiccups: it is all a poller sees);
        True when the stored record is final afterwards, whoever wrote it. A result the tenant's job bytes
        cannot hold is refused by the store (nothing written): `record` becomes a failure saying so, without
        its images, and that is written instead (a failure is never refused for quota)."""
        for attempt in range(FINAL_WRITE_ATTEMPTS):
            try:
                if await asyncio.to_thread(self.store.complete_job, record.model_copy(), self.ttl_s):
                    log.info("job finished", extra={"job": record.id, "status": record.status, "owner": self.replica})
                    return True
                stored = await asyncio.to_thread(self.store.get_job, record.tenant, record.id)
                log.info("job was finished elsewhere", extra={"job": record.id, "owner": self.replica})
                return stored is None or stored.terminal
            except TenantGone:
                log_dropped(record.id, record.tenant)
                return True
            except QuotaExceeded as full:  # at most once: the failure carries no result, nothing to check
                log.warning("job result over its tenant's job bytes", extra={"job": record.id, "error": str(full)})
                record.status, record.result, record.error = "failed", None, error_body(full)
            except Exception:  # noqa: BLE001 - a store hiccup: try again
                log.exception("could not write the job's outcome", extra={"job": record.id})
                await asyncio.sleep(0.5 * 2**attempt)
        return False

    async def _persist(self, live: LiveJob) -> bool:
        """Write progress and heartbeat; read back a cancel request made on another replica, or that the job
        is no longer ours. False when the store could not be written (the next heartbeat tries again)."""
        async with live.lock:
            if live.record.terminal or live.lost or live.orphaned:
                return True  # the final write is `finish`'s
            live.record.heartbeat = time.time()
            live.dirty = False
            snapshot = live.record.model_copy()
            try:
                stored = await asyncio.to_thread(self.store.save_progress, snapshot, self.ttl_s)
                if stored.terminal or stored.owner != snapshot.owner:
                    live.lost = True  # finished or reclaimed elsewhere while this replica looked dead
                if stored.cancel_requested or live.lost:
                    live.record.cancel_requested = stored.cancel_requested
                    if live.batch is not None:
                        live.batch.cancel()
            except TenantGone:
                live.orphaned = True  # its rows are freed at the engine's next tick; `_run` writes nothing
                if live.batch is not None:
                    live.batch.cancel()
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
        try:
            await self.start_stored(record)
        except QueueFull:
            record.heartbeat = 0.0  # claimable again on the next round, here or elsewhere
            try:
                await asyncio.to_thread(self.store.put_job, record, self.ttl_s)
            except TenantGone:
                log_dropped(record.id, record.tenant)

    async def start_stored(self, record: JobRecord) -> asyncio.Task[bool] | None:
        """Start a stored job this replica now owns (claimed). Its task says whether the record ended final;
        None when it ended at once (it could not be planned any more, e.g. its adapter was deleted).
        QueueFull: nothing was started, the caller tries again later."""
        log.info("starting stored job", extra={"job": record.id, "previous_step": record.step})
        live = LiveJob(record)
        record.status, record.step = "queued", 0
        try:
            plan = await asyncio.to_thread(self._plan_stored, record)
            batch = self._submit(live, plan, capped=False)  # refusing it now would fail an accepted job
        except QueueFull:
            raise  # not a failure of the job: the caller retries
        except Exception as error:  # noqa: BLE001 - e.g. its adapter was deleted meanwhile
            record.status, record.error = "failed", error_body(error)
            await self.finish(record)
            return None
        return self._follow(live, plan, batch)

    # -- reading and cancelling ---------------------------------------------------------------------------
    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        """The store says whether `tenant` may see the job (its own, of its current epoch); a job running here
        answers with its live progress, fresher than the last heartbeat."""
        stored = await asyncio.to_thread(self.store.get_job, tenant, job_id)
        live = self.live.get(job_id)
        if stored is not None and live is not None and not live.orphaned:
            return live.record.model_copy()
        return stored

    async def cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        record = await asyncio.to_thread(self.store.request_cancel, tenant, job_id)
        live = self.live.get(job_id)
        if record is not None and live is not None and live.batch is not None:
            live.record.cancel_requested = True
            live.batch.cancel()  # on this replica at once; elsewhere at the owner's next heartbeat
        elif record is not None and record.status == "queued" and not record.owner:
            # still in the job stream: final now (refused if a worker took it meanwhile: it sees the flag)
            cancelled = record.model_copy(update={"status": "cancelled", "error": CANCELLED})
            if await self.finish(cancelled):
                record = await self.get(tenant, job_id) or cancelled
        return record

    async def wait(self, tenant: str, job_id: str) -> JobRecord | None:
        """Until the job is final (a synchronous request run by a worker); None if it expired meanwhile."""
        while True:
            record = await self.get(tenant, job_id)
            if record is None or record.terminal:
                return record
            await asyncio.sleep(self.timing.result_poll_s)

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
