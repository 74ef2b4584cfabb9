"""`JobStream`: the job queue between API replicas and `diffplex worker`s, a Redis Stream with one consumer
group.

    <prefix>jobs:stream    entries {job, tenant}; consumer group `workers` (settings.worker.group)

An API replica writes the job record and its stream entry in one MULTI (`enqueue`), so a crash between the
two cannot leave a record no worker will ever see. A worker reads with XREADGROUP, keeps the entries it runs
fresh with XCLAIM ... JUSTID (idle time resets: "I am alive"), and XACKs and deletes it once the job's final
record is written, so the stream holds only unfinished work. Entries a worker holds but stopped touching (it
died) are taken over by another with XAUTOCLAIM after `stale_after_s`; the job record's conditional writes
(stores/job_updates.py) make the second run harmless if the first worker was only slow. Deleting a tenant
leaves its entries in the stream but deletes their records: the worker that reads one finds nothing to run and
acknowledges it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from service.stores.base import JobRecord
from service.stores.redis_store import RedisStore


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this consumer."""

    entry_id: str
    job_id: str
    tenant: str


def _delivery(entry_id: bytes | str, fields: dict | None) -> Delivery | None:
    """None for an entry deleted from the stream (XAUTOCLAIM may return those) or a malformed one."""
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not fields or b"job" not in fields or b"tenant" not in fields:
        return None
    return Delivery(entry, fields[b"job"].decode(), fields[b"tenant"].decode())


class JobStream:
    def __init__(self, store: RedisStore, group: str = "workers") -> None:
        self.store = store
        self.client = store.client
        self.key = store.k("jobs", "stream")
        self.group = group

    def ensure_group(self) -> None:
        """Create the stream and its group if missing (every API replica and worker calls it at start)."""
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def enqueue(self, job: JobRecord, ttl_s: int, max_work: int | None = None) -> str:
        """The new job's record and its entry, atomically, or neither: TenantGone if its tenant was deleted,
        QuotaExceeded over the store's job-record quota, WorkCapExceeded when its tenant's unfinished jobs and
        this one would pass `max_work` (RedisStore.create_job). Returns the entry id."""
        entry = {"job": job.id, "tenant": job.tenant}
        *_, entry_id = self.store.create_job(job, ttl_s, max_work, also=lambda pipe: pipe.xadd(self.key, entry))
        return entry_id.decode()

    def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """New entries for `consumer` (they join its pending list), waiting up to `block_ms` for one."""
        if count <= 0:
            return []
        answer = self.client.xreadgroup(self.group, consumer, {self.key: ">"}, count=count, block=block_ms)
        out = []
        for _, entries in answer or []:
            out += [d for d in (_delivery(e, f) for e, f in entries) if d is not None]
        return out

    def touch(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer runs: proof of life, so nobody reclaims them."""
        if entry_ids:
            self.client.xclaim(self.key, self.group, consumer, 0, entry_ids, justid=True)

    def ack(self, entry_id: str) -> None:
        """Acknowledged and deleted: XACK alone leaves every entry in the stream, which would then grow with
        every job ever made. The group's lag stays known: the entry was delivered already."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, self.group, entry_id)
            pipe.xdel(self.key, entry_id)
            pipe.execute()

    def release(self, deliveries: list[Delivery]) -> None:
        """Give entries back that this consumer took but never started (a draining worker): acknowledged and
        added again in one MULTI, so another worker reads them at once instead of after `stale_after_s`."""
        if not deliveries:
            return
        with self.client.pipeline(transaction=True) as pipe:
            for d in deliveries:
                pipe.xack(self.key, self.group, d.entry_id)
                pipe.xdel(self.key, d.entry_id)
                pipe.xadd(self.key, {"job": d.job_id, "tenant": d.tenant})
            pipe.execute()

    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        """Take over up to `count` entries whose consumer stopped touching them for `min_idle_s` (XAUTOCLAIM).
        Entries deleted from the stream meanwhile are dropped from the pending list by Redis itself."""
        if count <= 0:
            return []
        cursor, out = "0-0", []
        while len(out) < count:
            answer = self.client.xautoclaim(
                self.key, self.group, consumer, int(min_idle_s * 1000), start_id=cursor, count=count - len(out)
            )
            cursor, entries = answer[0], answer[1]
            out += [d for d in (_delivery(e, f) for e, f in entries) if d is not None]
            if cursor in (b"0-0", "0-0"):
                break
        return out

    def pending(self) -> int:
        """Entries delivered and not acknowledged yet, over all consumers (what KEDA also counts as lag)."""
        return int(self.client.xpending(self.key, self.group)["pending"])

    def backlog(self) -> int:
        """Entries not delivered to any consumer yet (XINFO GROUPS lag, Redis >= 7)."""
        for group in self.client.xinfo_groups(self.key):
            if group["name"] in (self.group, self.group.encode()):
                return int(group.get("lag") or 0)
        return 0
