"""Accepting a job: `POST /v1/jobs` (and, on role "api", every image request) is checked, planned and stored
before it is acknowledged, so a 4xx or 503 means nothing was accepted, and an accepted job is never lost.

What a tenant may hold is checked here: its live job records by count and bytes (the store's quota, checked
atomically with the record's write: over it, 403 and nothing stored), room for its images when they are stored
(url format; checked again when they are written: a job whose images no longer fit fails with quota_exceeded
and stores none), and its unfinished work: by the engine here (TenantBusy, 429) or, with the job stream, where
jobs wait in Redis and not in this replica's engine, by the store's sum of their `total`. A b64_json job keeps
its images in its record: if they do not fit the tenant's job bytes when it finishes, it ends failed with
quota_exceeded, without its images (outcome.finish).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from service.core.settings import Settings
from service.engine import TenantBusy
from service.generation.generate import ImageRequest
from service.generation.results import check_file_room
from service.jobs.run import JobRunner
from service.jobs.stored import stored_request
from service.stores.base import JobRecord, WorkCapExceeded, check_epoch
from service.stores.job_stream import JobStream
from service.stores.usage import check_job

# Retry-After of a job refused for its tenant's unfinished work in the stream: a rough estimate. Its jobs wait
# for workers this replica does not see, so it cannot tell when some finish; a capped tenant's work is a few
# of its largest jobs, the first of which a worker usually ends within seconds.
BUSY_RETRY_AFTER_S = 5.0


class JobCreator:
    def __init__(self, runs: JobRunner, settings: Settings, stream: JobStream | None) -> None:
        self.runs = runs  # its store, planner and engine; embedded mode runs the job right here
        self.store = runs.store
        self.settings = settings
        self.stream = stream  # set: jobs are enqueued for the workers instead of run here

    async def create(self, request: ImageRequest) -> JobRecord:
        """The accepted job's record, its images queued (here, or in the job stream). The record carries the
        tenant incarnation the request authenticated as: the store refuses it (TenantGone) once that
        incarnation was deleted, even if the name exists again."""
        tenant, epoch = request.tenant, request.epoch
        incarnation = await asyncio.to_thread(self.store.get_tenant, tenant)
        # deleted since it authenticated: refused before any work (the store's writes check again, atomically)
        check_epoch(tenant, epoch, None if incarnation is None else incarnation.epoch)
        await asyncio.to_thread(self._check_room, request)
        plan = await asyncio.to_thread(request.plan, self.runs.planner)
        record = JobRecord(
            id=f"job_{secrets.token_hex(12)}",
            tenant=tenant,
            epoch=epoch,
            request=stored_request(request, plan.requests[0].seed),
            owner="" if self.stream is not None else self.runs.replica,  # a worker becomes the owner
            total=sum(r.steps for r in plan.requests),
        )
        if self.stream is not None:
            try:
                await asyncio.to_thread(
                    self.stream.enqueue, record.model_copy(), self.runs.ttl_s, self.max_work(tenant)
                )
            except WorkCapExceeded as busy:
                raise TenantBusy(str(busy), BUSY_RETRY_AFTER_S) from None
            return record
        # the engine refuses a busy tenant (TenantBusy) before anything is stored
        live = self.runs.submit(record, plan, request.output(self.store, self.runs.ttl_s))
        try:
            await asyncio.to_thread(self.store.create_job, record.model_copy(), self.runs.ttl_s)
        except BaseException:
            self.runs.withdraw(live)
            raise
        self.runs.follow(live)
        return record.model_copy()

    def _check_room(self, request: ImageRequest) -> None:
        """Blocking. Refused before it is planned when the tenant holds its quota of job records (by count, or
        at its bytes), or has no room left for its url images; the store checks the record again, atomically,
        when it writes it."""
        usage = self.store.usage(request.tenant, request.epoch)
        check_job(usage, self.store.quota, self.runs.ttl_s, time.time())
        check_file_room(request.output(self.store, self.runs.ttl_s), request.params.n, usage)

    def max_work(self, tenant: str) -> int:
        """Images x steps the tenant may have unfinished in the job stream: the engine's per-tenant cap, weighted."""
        fairness = self.settings.fairness
        return int(fairness.max_tenant_work * fairness.weights.get(tenant, 1.0))
