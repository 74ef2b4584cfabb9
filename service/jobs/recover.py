"""Recovering the jobs of a replica that stopped heart-beating (it crashed): every replica periodically claims
them in the store and runs them again from their stored request, so an accepted job is never lost: it ends
succeeded, failed (with the reason) or cancelled. Embedded mode only: with the job stream, the workers reclaim
stream entries instead (service/worker/)."""

from __future__ import annotations

import asyncio
import logging

from service.core.error_handlers import STORE_OUTAGES
from service.engine import QueueFull
from service.jobs.outcome import log_dropped
from service.jobs.run import JobRunner
from service.stores.base import JobRecord, TenantGone

log = logging.getLogger(__name__)


async def recover_stale(runs: JobRunner, stale_after_s: float) -> list[JobRecord]:
    """One round: claim the jobs whose owner is silent for `stale_after_s`, and run them here."""
    claimed = await asyncio.to_thread(runs.store.claim_stale_jobs, runs.replica, stale_after_s, runs.ttl_s)
    for record in claimed:
        await resume(runs, record)
    return claimed


async def resume(runs: JobRunner, record: JobRecord) -> None:
    """Run a crashed replica's job again; with the engine queue full, leave it claimable for the next round."""
    try:
        await runs.start_stored(record)
    except STORE_OUTAGES:
        return  # its plan could not read the store: claimed again once its heartbeat is stale and the store back
    except QueueFull:
        record.heartbeat = 0.0  # claimable again on the next round, here or elsewhere
        try:
            await asyncio.to_thread(runs.store.put_job, record, runs.ttl_s)
        except TenantGone:
            log_dropped(record.id, record.tenant)


async def recovery_loop(runs: JobRunner, stale_after_s: float, every_s: float) -> None:
    while True:
        try:
            await recover_stale(runs, stale_after_s)
        except Exception:
            log.exception("job recovery failed")
        await asyncio.sleep(every_s)
