"""A tenant's jobs as it sees them: read (with live progress when the job runs here), awaited, cancelled and
forgotten. The store says whether a tenant may see a job (its own, of its current epoch): another tenant's job
reads exactly like a missing one.

A cancel is recorded in the store first: from then on the job can only end `cancelled`
(stores/job_updates.completion), so the answer to `DELETE` is the state the job ends in. It is the final
record when the job ends within `cancel_wait_s`, as it does when its runner hears of the cancel: at once on
this replica, through the store's notification elsewhere (Redis pub/sub: milliseconds), its rows leaving the
engine at the next tick. Otherwise (a runner that missed the notification hears it at its next heartbeat; a
crashed one's job waits to be reclaimed) the answer is the record with `cancel_requested` set, which the API
shows as status "cancelling" (api/routes/jobs.py) until the final record is written.
"""

from __future__ import annotations

import asyncio
import logging

from service.jobs.outcome import cancelled, finish
from service.jobs.run import JobRunner
from service.stores.base import JobRecord

log = logging.getLogger(__name__)


class JobRecords:
    def __init__(self, runs: JobRunner, poll_s: float, cancel_wait_s: float) -> None:
        self.runs = runs
        self.store = runs.store
        self.poll_s = poll_s  # how often `wait` reads a job another replica runs
        self.cancel_wait_s = cancel_wait_s  # how long `cancel` waits for the job's final record

    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        """A job running here answers with its live progress, fresher than its last heartbeat."""
        stored = await asyncio.to_thread(self.store.get_job, tenant, job_id)
        live = self.runs.live.get(job_id)
        if stored is not None and live is not None and not live.orphaned:
            return live.record.model_copy()
        return stored

    async def cancel(self, tenant: str, job_id: str, settle: bool = True) -> JobRecord | None:
        """Cancel a queued or running job; a finished job is returned unchanged. With `settle`, the final record
        if the job ends within `cancel_wait_s` (it is stopped within one engine step of its runner hearing of
        the cancel), else the record as it is, `cancel_requested` set (module docstring)."""
        record = await asyncio.to_thread(self.store.request_cancel, tenant, job_id)
        if record is None or record.terminal:
            return record
        live = self.runs.live.get(job_id)
        if live is not None:
            self.runs.cancel_here(live)  # its rows leave the engine at the next tick
        elif record.status == "queued" and not record.owner:
            # still in the job stream: final now (refused if a worker took it meanwhile: it sees the flag)
            await finish(self.store, cancelled(record), self.runs.ttl_s, self.runs.replica)
        # else another replica runs it: the store notified it (request_cancel), its heartbeat reads the flag
        if not settle:
            return await self.get(tenant, job_id)
        return await self._settled(tenant, job_id)

    async def _settled(self, tenant: str, job_id: str) -> JobRecord | None:
        """The job's record once final, or as it is after `cancel_wait_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cancel_wait_s
        while True:
            record = await self.get(tenant, job_id)
            left = deadline - loop.time()
            if record is None or record.terminal or left <= 0:
                return record
            run = self.runs.tasks.get(job_id)
            if run is not None:  # it runs here: its end is its final write (or the run's loss of the job)
                await asyncio.wait({run}, timeout=left)
            else:
                await asyncio.sleep(min(self.poll_s, left))

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
