"""The rules of a job record's conditional writes, as pure functions both stores apply under their lock
(LocalStore: `fcntl`; RedisStore: WATCH / MULTI).

Each takes the stored record (None when missing or expired) and the current epoch of the job's tenant (None
when the tenant does not exist), read in the same locked step, and returns (what to write or None, what the
caller gets back). They are what makes a job complete exactly once when two runners raced on it: a worker
that was presumed dead and came back, or two replicas after a reclaim; and what keeps a deleted tenant's job
from being written again after the delete (stores/base.py: epochs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.stores.base import JobRecord, check_epoch

# The `error` of a cancelled job. Here, because the completion rule writes it too (below).
CANCELLED: dict[str, Any] = {
    "message": "the job was cancelled",
    "type": "invalid_request_error",
    "param": None,
    "code": "cancelled",
}


def require_current(job: JobRecord, current: str | None) -> None:
    """TenantGone unless the job belongs to its tenant's current incarnation."""
    check_epoch(job.tenant, job.epoch, current)


def visible(stored: JobRecord, tenant: str, current: str | None) -> JobRecord | None:
    """The record, if `tenant`'s current incarnation (epoch `current`) may see it: its own, of that epoch."""
    return stored if stored.tenant == tenant and stored.epoch == current else None


def progress(stored: JobRecord | None, job: JobRecord, current: str | None) -> tuple[JobRecord | None, JobRecord]:
    """A runner's heartbeat. Written only while the runner still owns an unfinished job; a cancel requested
    meanwhile (on any replica) is kept. The caller gets the record as stored afterwards: terminal or owned
    by someone else means its own run is a duplicate and should stop."""
    require_current(job, current)
    if stored is not None and (stored.terminal or stored.owner != job.owner or stored.tenant != job.tenant):
        return None, stored
    cancel = job.cancel_requested or bool(stored and stored.cancel_requested)
    merged = job.model_copy(update={"cancel_requested": cancel})
    return merged, merged


def completion(stored: JobRecord | None, job: JobRecord, current: str | None) -> tuple[JobRecord | None, bool]:
    """The final write, at most once per job: refused once the record is terminal. A result is accepted from
    whoever made it first (re-runs make the same images from the stored seed); a failure or cancellation only
    from the job's current owner, so a stale runner cannot fail a job another runner is finishing.

    Once a cancel is recorded the job ends cancelled, whatever its runner made meanwhile: `DELETE` answered the
    client that it would (jobs/records.py), and a runner on another replica hears of the cancel only a moment
    later (pub/sub, or its next heartbeat), possibly after its last step."""
    require_current(job, current)
    if stored is not None and (stored.terminal or stored.tenant != job.tenant):
        return None, False
    if stored is not None and job.status != "succeeded" and stored.owner not in ("", job.owner):
        return None, False
    if stored is not None and stored.cancel_requested and job.status != "cancelled":
        job = job.model_copy(
            update={"status": "cancelled", "result": None, "error": dict(CANCELLED), "cancel_requested": True}
        )
    return job, True


def claim(
    stored: JobRecord | None, tenant: str, owner: str, current: str | None
) -> tuple[JobRecord | None, JobRecord | None]:
    """A runner takes a job (first delivery or reclaim): it becomes the owner and the attempt is counted.
    A finished job is returned unchanged (the caller only acknowledges it); a missing one as None."""
    if stored is None or stored.tenant != tenant:
        return None, None
    require_current(stored, current)
    if stored.terminal:
        return None, stored
    update = {"owner": owner, "heartbeat": time.time(), "attempts": stored.attempts + 1, "status": "queued", "step": 0}
    taken = stored.model_copy(update=update)
    return taken, taken


class ConditionalJobWrites:
    """The three job writes of both stores, each one of the rules above applied by the store's own
    `_update_job(tenant, job_id, rule, ttl_s)` (LocalStore: under its file lock; RedisStore: WATCH / MULTI)."""

    def _update_job(self, tenant: str, job_id: str, rule: Callable, ttl_s: int) -> Any:
        raise NotImplementedError

    def save_progress(self, job: JobRecord, ttl_s: int) -> JobRecord:
        return self._update_job(job.tenant, job.id, lambda s, e: progress(s, job, e), ttl_s)

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        return self._update_job(job.tenant, job.id, lambda s, e: completion(s, job, e), ttl_s)

    def claim_job(self, tenant: str, job_id: str, owner: str, ttl_s: int) -> JobRecord | None:
        return self._update_job(tenant, job_id, lambda s, e: claim(s, tenant, owner, e), ttl_s)
