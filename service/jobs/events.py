"""A job's server-sent events (`GET /v1/jobs/{id}/events`): its current state first, then `step` on progress,
then `done` or `error`. A job running here is followed on every step; one running elsewhere is read from the
store, where its owner's heartbeats write its progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from service.jobs.records import JobRecords

SSE_KEEPALIVE_S = 15.0
REMOTE_POLL_S = 0.5


async def job_events(records: JobRecords, tenant: str, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data); ("keepalive", {}) when nothing happened for a while (proxies close silent connections).
    Nothing at all when the tenant has no such job."""
    record = await records.get(tenant, job_id)
    if record is None:
        return
    running_here = records.runs.live
    last: tuple[str, int] | None = None
    polls = 0
    while True:
        live = running_here.get(job_id)
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
            if job_id in running_here:
                continue  # re-read the live snapshot
        else:
            await asyncio.sleep(REMOTE_POLL_S)
            polls += 1
            if polls % int(SSE_KEEPALIVE_S / REMOTE_POLL_S) == 0:
                yield "keepalive", {}
        latest = await records.get(tenant, job_id)
        if latest is None:  # expired meanwhile
            yield "error", {"id": job_id, "status": "failed", "error": {"message": "the job expired"}}
            return
        record = latest
