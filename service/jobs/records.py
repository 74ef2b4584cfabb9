"""A tenant's jobs as it sees them: read (with live progress when the job runs here), awaited, cancelled and
forgotten. The store says whether a tenant may see a job (its own, of its current epoch): another tenant's job
reads exactly like a missing one."""

from __future__ import annotations

import asyncio
import logging

from service.jobs.outcome import CANCELLED, finish
from service.jobs.run import JobRunner
from service.stores.base import JobRecord

log = logging.getLogger(__name__)


class JobRecords:
    def __init__(self, runs: JobRunner, poll_s: float) -> None:
        self.runs = runs
        self.store = runs.store
        self.poll_s = poll_s  # how often `wait` reads a job another replica runs

    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        """A job running here answers with its live progress, fresher than its last heartbeat."""
        stored = await asyncio.to_thread(self.store.get_job, tenant, job_id)
        live = self.runs.live.get(job_id)
        if stored is not None and live is not None and not live.orphaned:
            return live.record.model_copy()
        return stored

    async def cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job, at once when it runs here or still waits in the job stream, else at
        its owner's next heartbeat; a finished job is returned unchanged."""
        record = await asyncio.to_thread(self.store.request_cancel, tenant, job_id)
        live = self.runs.live.get(job_id)
        if record is not None and live is not None and live.generation is not None:
            live.record.cancel_requested = True
            live.cancel()
        elif record is not None and record.status == "queued" and not record.owner:
            # still in the job stream: final now (refused if a worker took it meanwhile: it sees the flag)
            cancelled = record.model_copy(update={"status": "cancelled", "error": CANCELLED})
            if await finish(self.store, cancelled, self.runs.ttl_s, self.runs.replica):
                record = await self.get(tenant, job_id) or cancelled
        return record

    async def wait(self, tenant: str, job_id: str) -> JobRecord | None:
        """Until the job is final (a synchronous request run by a worker); None if it expired meanwhile."""
        while True:
            record = await self.get(tenant, job_id)
            if record is None or record.terminal:
                return record
            await asyncio.sleep(self.poll_s)

    async def forget(self, tenant: str, job_id: str) -> None:
        """Remove a finished job's record: a synchronous request's (role "api") once it was answered. Its id was
        never shown, and kept it would hold a place in the tenant's job quota for `job_ttl_s`. Best effort: a
        store hiccup leaves it to expire."""
        try:
            await asyncio.to_thread(self.store.delete_job, tenant, job_id)
        except Exception:  # noqa: BLE001 - the request was answered already; the record expires anyway
            log.warning("could not remove an answered request's job record", extra={"job": job_id})
