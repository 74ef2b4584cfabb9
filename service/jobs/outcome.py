"""How a job ends: the error bodies its final record carries, and the one write of that record.

Every write after a job's creation is conditional (stores/job_updates.py): the final record is written once,
whoever gets there first (the owner, a runner that reclaimed the job, a cancel of a job still in the stream).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.core.errors import as_api_error
from service.stores.base import JobRecord, QuotaExceeded, Store, TenantGone
from service.stores.job_updates import CANCELLED

log = logging.getLogger(__name__)

FINAL_WRITE_ATTEMPTS = 6


def error_body(error: BaseException) -> dict[str, Any]:
    """The job's `error`, as the API would have answered the same error (its message, type and code)."""
    mapped = as_api_error(error) if isinstance(error, Exception) else None
    if mapped is None:
        return {"message": f"the job failed: {error}", "type": "server_error", "param": None, "code": None}
    return {"message": mapped.message, "type": mapped.type, "param": mapped.param, "code": mapped.code}


def cancelled(record: JobRecord) -> JobRecord:
    """The job's final record as cancelled (what it made so far is not kept)."""
    return record.model_copy(update={"status": "cancelled", "result": None, "error": dict(CANCELLED)})


def log_dropped(job_id: str, tenant: str) -> None:
    log.info("job of a deleted tenant dropped", extra={"job": job_id, "tenant": tenant})


async def finish(store: Store, record: JobRecord, ttl_s: int, replica: str) -> bool:
    """Write a final record at most once (retried through store hiccups: it is all a poller sees); True when
    the stored record is final afterwards, whoever wrote it. A result the tenant's job bytes cannot hold is
    refused by the store (nothing written): `record` becomes a failure saying so, without its images, and that
    is written instead (a failure is never refused for quota)."""
    for attempt in range(FINAL_WRITE_ATTEMPTS):
        try:
            if await asyncio.to_thread(store.complete_job, record.model_copy(), ttl_s):
                log.info("job finished", extra={"job": record.id, "status": record.status, "owner": replica})
                return True
            stored = await asyncio.to_thread(store.get_job, record.tenant, record.id)
            log.info("job was finished elsewhere", extra={"job": record.id, "owner": replica})
            return stored is None or stored.terminal
        except TenantGone:
            log_dropped(record.id, record.tenant)
            return True
        except QuotaExceeded as full:  # at most once: the failure carries no result, nothing to check
            log.warning("job result over its tenant's job bytes", extra={"job": record.id, "error": str(full)})
            record.status, record.result, record.error = "failed", None, error_body(full)
        except Exception:
            log.exception("could not write the job's outcome", extra={"job": record.id})
            await asyncio.sleep(0.5 * 2**attempt)
    return False
