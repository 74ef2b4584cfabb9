"""`RedisStore`: shared state for several replicas.

Keys (all under `prefix`):
    tenants                      set of tenant names
    tenant:<name>                TenantRecord JSON (with its epoch)
    key:<key id>                 hash {tenant, epoch, salt, digest}   (never the key itself)
    tenant_keys:<name>           set of key ids
    adapters:<tenant>            hash name -> AdapterMeta JSON (with the epoch it was written under)
    blob:<tenant>:<name>:<sha>   the uploaded file
    job:<id>                     JobRecord JSON (tenant, epoch), with TTL
    tenant_jobs:<name>:<epoch>   sorted set id -> expiry time, of that tenant incarnation's job records
    tenant_work:<name>:<epoch>   hash id -> `total` (images x steps), of its unfinished job records
    tenant_job_bytes:<name>:<epoch>  hash id -> bytes of the record's JSON, of its job records
    tenant_files:<name>:<epoch>  sorted set "<id> <bytes>" -> expiry time, of its files
    jobs:open                    sorted set id -> heartbeat, of unfinished jobs
    jobs:stream                  the job queue of `diffplex worker` (stores/job_stream.py)
    file:<tenant>:<epoch>:<id>   PNG bytes, with TTL
    rate:<tenant>:<epoch>:<window>   counter of that incarnation, expires with its window
    channel adapters.changed     "<tenant>\\0<name>" on every adapter write / delete
    channel jobs.cancelled       "<job id>" on every cancel recorded: its runner drops its rows at once

Read-modify-write sections (quota checks, cancel, claims) use WATCH / MULTI, so two replicas racing on
the same tenant serialize. Pub/sub only makes things happen sooner: the adapter cache re-checks each
adapter's sha256 against the metadata read per request, so a missed message cannot serve a stale adapter, and a
runner that misses a cancel reads the job's `cancel_requested` at its next heartbeat.

Storage quotas (stores/usage.py) count the live members of those per-incarnation indexes: a new job
(`create_job`), a job's final record with its result (`complete_job`) or a request's files (`put_files`) WATCH
the indexes they join, count them and write in one MULTI, so writers racing on one tenant (on any replica) never
pass the quota together. Each write trims the members that expired (their records and files are gone with their
TTL), and the indexes expire with their last member. A record's bytes are set at every write of it (its JSON
is at hand, and the HSET rides in the MULTI that writes it); they are counted only while its id is a live
member of `tenant_jobs`.

Every job and file write WATCHes `tenant:<name>` and checks the epoch it was made for (stores/base.py:
epochs). Deleting a tenant first takes that record with GETDEL, so a write in flight fails its EXEC, reads
again and is refused; then it removes the incarnation's jobs (listed in its `tenant_jobs` set, since job keys
do not name their tenant) and its files (SCAN MATCH on `file:<tenant>:<epoch>:*`, never KEYS), then its usage
indexes. All are keyed by the epoch, so a tenant re-created while the delete runs has other keys and loses
nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from service.core.settings import RedisClientSettings
from service.stores import job_updates
from service.stores.base import (
    AdapterMeta,
    CancelCallback,
    ChangeCallback,
    Conflict,
    JobRecord,
    Quota,
    StorageQuota,
    TenantRecord,
    TenantUsage,
    check_epoch,
    stamp_epoch,
)
from service.stores.quota import check_quota
from service.stores.redis_client import redis_client
from service.stores.usage import check_files, check_job, check_result, check_work, record_bytes, summarize
from service.tenants import keys

log = logging.getLogger(__name__)

DELETE_BATCH = 500  # keys per UNLINK when a tenant's jobs and files are removed


def _glob_literal(text: str) -> str:
    """`text` matched literally in a SCAN MATCH pattern (the key prefix is configurable: it may hold * ? [ ])."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _job_entries(
    members: list[tuple[bytes, float]], work: dict[bytes, bytes], sizes: dict[bytes, bytes]
) -> dict[str, tuple[float, int, int]]:
    """id -> (expiry, unfinished work, record bytes) from `tenant_jobs` (live members), `tenant_work` and
    `tenant_job_bytes`."""
    return {m.decode(): (score, int(work.get(m, 0)), int(sizes.get(m, 0))) for m, score in members}


def _file_entries(members: list[tuple[bytes, float]]) -> dict[str, tuple[float, int]]:
    """id -> (expiry, bytes) from the live members of `tenant_files`."""
    entries = {}
    for member, score in members:
        file_id, _, size = member.decode().rpartition(" ")
        entries[file_id] = (score, int(size))
    return entries


def _after(now: float) -> str:
    """ZRANGEBYSCORE's bound for the members still live at `now` (expiry strictly later)."""
    return f"({now!r}"


class RedisStore(job_updates.ConditionalJobWrites):
    def __init__(
        self,
        url: str,
        prefix: str = "diffplex:",
        options: RedisClientSettings | None = None,
        quota: StorageQuota | None = None,
    ) -> None:
        self.prefix = prefix
        self.quota = quota or StorageQuota()
        self.client = redis_client(url, options or RedisClientSettings())
        self.channel = f"{prefix}adapters.changed"
        self.cancel_channel = f"{prefix}jobs.cancelled"
        self._callbacks: list[ChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
        self._pubsub: redis.client.PubSub | None = None
        self._listener: redis.client.PubSubWorkerThread | None = None

    def k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _transact(self, attempt: Callable[[redis.client.Pipeline], Any]) -> Any:
        """`attempt(pipe)` (WATCH, read, MULTI, write, EXEC) again until no watched key changed under it."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    return attempt(pipe)
                except redis.WatchError:
                    continue

    def _watch_epoch(self, pipe: redis.client.Pipeline, tenant: str, *watch: str) -> str | None:
        """WATCH the tenant's record (and `watch`) and read its epoch (None: no such tenant): a delete or a
        re-creation before EXEC aborts the transaction."""
        tenant_key = self.k("tenant", tenant)
        pipe.watch(tenant_key, *watch)
        raw = pipe.get(tenant_key)
        return None if raw is None else TenantRecord.model_validate_json(raw).epoch

    def _unlink(self, keys: Iterable[bytes | str]) -> None:
        batch: list[bytes | str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)

    # -- tenants and keys ---------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> str:
        api_key, record = keys.new_key()
        tenant = TenantRecord.new(name)
        if not self.client.set(self.k("tenant", name), tenant.model_dump_json(), nx=True):
            raise Conflict(f"tenant {name!r} exists already")
        key = {"tenant": name, "epoch": tenant.epoch, "salt": record.salt, "digest": record.digest}
        with self.client.pipeline() as pipe:
            pipe.hset(self.k("key", record.key_id), mapping=key)
            pipe.sadd(self.k("tenant_keys", name), record.key_id)
            pipe.sadd(self.k("tenants"), name)
            pipe.execute()
        return api_key

    def delete_tenant(self, name: str) -> bool:
        raw = self.client.getdel(self.k("tenant", name))  # from here on, writes for this incarnation are refused
        if raw is None:
            return False
        epoch = TenantRecord.model_validate_json(raw).epoch
        key_ids = [k.decode() for k in self.client.smembers(self.k("tenant_keys", name))]
        metas = self.list_adapters(name)
        with self.client.pipeline() as pipe:
            for key_id in key_ids:
                pipe.delete(self.k("key", key_id))
            for meta in metas:
                pipe.delete(self.k("blob", name, meta.name, meta.sha256))
            pipe.delete(self.k("tenant_keys", name), self.k("adapters", name))
            pipe.srem(self.k("tenants"), name)
            pipe.execute()
        self._delete_jobs(name, epoch)
        self.client.unlink(
            *(self.k(index, name, epoch) for index in ("tenant_work", "tenant_job_bytes", "tenant_files"))
        )
        for kind in ("file", "rate"):  # its images, and its rate counters (they would expire with their window)
            self._unlink(self.client.scan_iter(match=_glob_literal(self.k(kind, name, epoch, "")) + "*", count=1000))
        for meta in metas:
            self._publish(name, meta.name)
        return True

    def _delete_jobs(self, name: str, epoch: str) -> None:
        """The incarnation's job records, and their places in `jobs:open` (the recovery loop would only drop
        them later). Their stream entries stay: a worker that reads one finds no record and acknowledges it."""
        index = self.k("tenant_jobs", name, epoch)
        ids = [member for member, _ in self.client.zscan_iter(index, count=1000)]
        for start in range(0, len(ids), DELETE_BATCH):
            chunk = ids[start : start + DELETE_BATCH]
            with self.client.pipeline(transaction=False) as pipe:
                pipe.unlink(*(self.k("job", job_id.decode()) for job_id in chunk))
                pipe.zrem(self.k("jobs", "open"), *chunk)
                pipe.execute()
        self.client.unlink(index)

    def get_tenant(self, name: str) -> TenantRecord | None:
        raw = self.client.get(self.k("tenant", name))
        return None if raw is None else TenantRecord.model_validate_json(raw)

    def list_tenants(self) -> list[TenantRecord]:
        names = sorted(n.decode() for n in self.client.smembers(self.k("tenants")))
        raws = self.client.mget([self.k("tenant", n) for n in names]) if names else []
        return [TenantRecord.model_validate_json(r) for r in raws if r is not None]

    def authenticate(self, api_key: str) -> TenantRecord | None:
        parts = keys.split_key(api_key)
        if parts is None:
            return None
        raw = self.client.hgetall(self.k("key", parts[0]))
        if not raw:
            return None
        record = keys.KeyRecord(parts[0], raw[b"salt"].decode(), raw[b"digest"].decode())
        if not keys.matches(record, parts[1]):
            return None
        tenant = self.get_tenant(raw[b"tenant"].decode())
        # the key's epoch too: a key a crashed delete left behind never opens a re-created tenant of that name
        return tenant if tenant is not None and tenant.epoch == raw.get(b"epoch", b"").decode() else None

    # -- adapters -----------------------------------------------------------------------------------------
    def put_adapter(
        self, tenant: str, meta: AdapterMeta, blob: bytes, quota: Quota, epoch: str | None = None
    ) -> AdapterMeta | None:
        index = self.k("adapters", tenant)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    meta = stamp_epoch(tenant, meta, epoch, self._watch_epoch(pipe, tenant, index))
                    others = [AdapterMeta.model_validate_json(v) for v in pipe.hvals(index)]
                    previous = next((m for m in others if m.name == meta.name), None)
                    check_quota([m for m in others if m.name != meta.name], meta, quota)
                    pipe.multi()
                    pipe.set(self.k("blob", tenant, meta.name, meta.sha256), blob)
                    pipe.hset(index, meta.name, meta.model_dump_json())
                    if previous is not None and previous.sha256 != meta.sha256:
                        pipe.delete(self.k("blob", tenant, previous.name, previous.sha256))
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue  # another write to this tenant's adapters: re-read and re-check the quota
        self._publish(tenant, meta.name)
        return previous

    def get_adapter(self, tenant: str, name: str, epoch: str | None = None) -> AdapterMeta | None:
        raw = self.client.hget(self.k("adapters", tenant), name)
        meta = None if raw is None else AdapterMeta.model_validate_json(raw)
        return meta if meta is not None and meta.visible_to(epoch) else None

    def list_adapters(self, tenant: str, epoch: str | None = None) -> list[AdapterMeta]:
        metas = [AdapterMeta.model_validate_json(v) for v in self.client.hvals(self.k("adapters", tenant))]
        return sorted((m for m in metas if m.visible_to(epoch)), key=lambda m: m.name)

    def adapter_blob(self, tenant: str, name: str, sha256: str) -> bytes | None:
        return self.client.get(self.k("blob", tenant, name, sha256))

    def delete_adapter(self, tenant: str, name: str, epoch: str | None = None) -> bool:
        index = self.k("adapters", tenant)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    check_epoch(tenant, epoch, self._watch_epoch(pipe, tenant, index))
                    raw = pipe.hget(index, name)
                    meta = None if raw is None else AdapterMeta.model_validate_json(raw)
                    if meta is None or not meta.visible_to(epoch):
                        return False
                    pipe.multi()
                    pipe.hdel(index, name)
                    pipe.delete(self.k("blob", tenant, name, meta.sha256))
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self._publish(tenant, name)
        return True

    def _publish(self, tenant: str, name: str) -> None:
        self.client.publish(self.channel, f"{tenant}\0{name}")

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """The first subscriber of either kind starts one listener thread (redis-py's PubSubWorkerThread) per store."""
        return self._subscribe_to(self._callbacks, callback)

    def subscribe_cancels(self, callback: CancelCallback) -> Callable[[], None]:
        return self._subscribe_to(self._cancel_callbacks, callback)

    def _subscribe_to(self, callbacks: list[Any], callback: Any) -> Callable[[], None]:
        callbacks.append(callback)
        if self._listener is None:
            # both channels at once: subscribing on a PubSub while its thread reads it is not safe
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(**{self.channel: self._on_message, self.cancel_channel: self._on_cancel})
            self._listener = self._pubsub.run_in_thread(
                sleep_time=1.0, daemon=True, exception_handler=self._on_listener_error
            )

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    @staticmethod
    def _on_listener_error(error: BaseException, pubsub: redis.client.PubSub, thread: object) -> None:
        """Keep listening through a Redis outage: redis-py re-subscribes when the connection comes back.
        Messages missed meanwhile cost only memory (the cache checks versions per request) or a heartbeat's
        wait (a runner reads a missed cancel from the job's record)."""
        log.warning("store notification listener lost Redis; retrying", extra={"error": str(error)})
        time.sleep(1.0)

    def _on_message(self, message: dict) -> None:
        tenant, _, name = message["data"].decode().partition("\0")
        for callback in list(self._callbacks):
            try:
                callback(tenant, name)
            except Exception:
                log.exception("adapter change callback failed")

    def _on_cancel(self, message: dict) -> None:
        job_id = message["data"].decode()
        for callback in list(self._cancel_callbacks):
            try:
                callback(job_id)
            except Exception:
                log.exception("job cancel callback failed")

    # -- jobs and files -----------------------------------------------------------------------------------
    def write_job(self, pipe: redis.client.Pipeline, job: JobRecord, ttl_s: int) -> None:
        """Queue the writes of one job record on `pipe`, inside a transaction that checked its epoch."""
        now = time.time()
        raw = job.model_dump_json().encode()  # its length is `usage.record_bytes(job)`
        pipe.set(self.k("job", job.id), raw, ex=ttl_s)
        if job.terminal:
            pipe.zrem(self.k("jobs", "open"), job.id)
        else:
            pipe.zadd(self.k("jobs", "open"), {job.id: job.heartbeat})
        index = self.k("tenant_jobs", job.tenant, job.epoch)
        pipe.zadd(index, {job.id: now + ttl_s})
        pipe.zremrangebyscore(index, "-inf", now)  # ids whose records expired: the index stays bounded
        self._expire_with(pipe, index, ttl_s)
        work = self.k("tenant_work", job.tenant, job.epoch)
        if job.terminal:
            pipe.hdel(work, job.id)  # an emptied hash is deleted by Redis
        else:
            pipe.hset(work, job.id, job.total)
            self._expire_with(pipe, work, ttl_s)
        sizes = self.k("tenant_job_bytes", job.tenant, job.epoch)
        pipe.hset(sizes, job.id, len(raw))  # at every write, heartbeats too: the JSON is at hand (stores/usage.py)
        self._expire_with(pipe, sizes, ttl_s)

    @staticmethod
    def _expire_with(pipe: redis.client.Pipeline, index: str, ttl_s: int) -> None:
        """An index goes with the incarnation's last record: its TTL is the latest of its members'."""
        pipe.expire(index, ttl_s, nx=True)
        pipe.expire(index, ttl_s, gt=True)

    def put_job(self, job: JobRecord, ttl_s: int) -> None:
        def attempt(pipe: redis.client.Pipeline) -> None:
            job_updates.require_current(job, self._watch_epoch(pipe, job.tenant))
            pipe.multi()
            self.write_job(pipe, job, ttl_s)
            pipe.execute()

        self._transact(attempt)

    def create_job(
        self,
        job: JobRecord,
        ttl_s: int,
        max_work: int | None = None,
        also: Callable[[redis.client.Pipeline], object] | None = None,
    ) -> list[Any]:
        """`Store.create_job`, with more writes queued by `also` in the same MULTI (the job stream's entry);
        EXEC's answers. The tenant's indexes are WATCHed: a heartbeat of one of its jobs landing meanwhile only
        makes it count again."""
        jobs, work, sizes = self._job_indexes(job)
        size = record_bytes(job)

        def attempt(pipe: redis.client.Pipeline) -> list[Any]:
            job_updates.require_current(job, self._watch_epoch(pipe, job.tenant, jobs, work, sizes))
            now = time.time()
            members = pipe.zrangebyscore(jobs, _after(now), "+inf", withscores=True)
            held, held_sizes = pipe.hgetall(work), pipe.hgetall(sizes)
            entries = _job_entries(members, held, held_sizes)
            known = entries.pop(job.id, None) is not None  # a retried write is not a second job
            usage = summarize(entries, {}, now)
            if not known:
                check_job(usage, self.quota, ttl_s, now, size)
            check_work(usage.unfinished_work, job.total, max_work)
            live_ids = {m for m, _ in members}
            pipe.multi()
            for index, fields in ((work, held), (sizes, held_sizes)):
                expired = [field for field in fields if field not in live_ids]  # their records are gone
                if expired:
                    pipe.hdel(index, *expired)
            self.write_job(pipe, job, ttl_s)
            if also is not None:
                also(pipe)
            return pipe.execute()

        return self._transact(attempt)

    def _job_indexes(self, job: JobRecord) -> tuple[str, str, str]:
        """The usage indexes of the job's tenant incarnation: `tenant_jobs`, `tenant_work`, `tenant_job_bytes`."""
        jobs, work, sizes = (
            self.k(index, job.tenant, job.epoch) for index in ("tenant_jobs", "tenant_work", "tenant_job_bytes")
        )
        return jobs, work, sizes

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        """`Store.complete_job`: the completion rule, and a record carrying a result checked against its tenant's
        job bytes. Only then are the tenant's indexes WATCHed with the record: a failure or cancellation is
        never refused, so it does not retry for the tenant's other writes."""
        key = self.k("job", job.id)
        jobs, _, sizes = self._job_indexes(job)
        # the rule may still drop the result (a cancel came first): checked below only if it is written
        checked = job.result is not None and self.quota.max_job_bytes is not None
        size = record_bytes(job) if checked else 0

        def attempt(pipe: redis.client.Pipeline) -> bool:
            current = self._watch_epoch(pipe, job.tenant, key, *((jobs, sizes) if checked else ()))
            raw = pipe.get(key)
            write, answer = job_updates.completion(
                None if raw is None else JobRecord.model_validate_json(raw), job, current
            )
            if write is None:
                return answer
            if checked and write.result is not None:
                now = time.time()
                members = pipe.zrangebyscore(jobs, _after(now), "+inf", withscores=True)
                others = _job_entries(members, {}, pipe.hgetall(sizes))
                others.pop(job.id, None)  # replaced by this write
                check_result(summarize(others, {}, now), self.quota, size, ttl_s, now)
            pipe.multi()
            self.write_job(pipe, write, ttl_s)
            pipe.execute()
            return answer

        return self._transact(attempt)

    def delete_job(self, tenant: str, job_id: str) -> bool:
        key = self.k("job", job_id)

        def attempt(pipe: redis.client.Pipeline) -> bool:
            current = self._watch_epoch(pipe, tenant, key)
            raw = pipe.get(key)
            job = None if raw is None else job_updates.visible(JobRecord.model_validate_json(raw), tenant, current)
            if job is None or not job.terminal:
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self.k("tenant_jobs", tenant, job.epoch), job_id)
            pipe.hdel(self.k("tenant_work", tenant, job.epoch), job_id)
            pipe.hdel(self.k("tenant_job_bytes", tenant, job.epoch), job_id)
            pipe.zrem(self.k("jobs", "open"), job_id)
            pipe.execute()
            return True

        return self._transact(attempt)

    def usage(self, tenant: str, epoch: str | None = None) -> TenantUsage:
        record = self.get_tenant(tenant)
        if record is None or epoch not in (None, record.epoch):
            return TenantUsage()
        now = time.time()
        with self.client.pipeline() as pipe:  # MULTI: one snapshot of the four indexes
            pipe.zrangebyscore(self.k("tenant_jobs", tenant, record.epoch), _after(now), "+inf", withscores=True)
            pipe.hgetall(self.k("tenant_work", tenant, record.epoch))
            pipe.hgetall(self.k("tenant_job_bytes", tenant, record.epoch))
            pipe.zrangebyscore(self.k("tenant_files", tenant, record.epoch), _after(now), "+inf", withscores=True)
            members, work, sizes, files = pipe.execute()
        return summarize(_job_entries(members, work, sizes), _file_entries(files), now)

    def _update_job(
        self,
        tenant: str,
        job_id: str,
        rule: Callable[[JobRecord | None, str | None], tuple[JobRecord | None, Any]],
        ttl_s: int,
    ) -> Any:
        """Apply a job_updates rule atomically: WATCH the record and its tenant's, decide, write in MULTI."""
        key = self.k("job", job_id)

        def attempt(pipe: redis.client.Pipeline) -> Any:
            current = self._watch_epoch(pipe, tenant, key)
            raw = pipe.get(key)
            write, answer = rule(None if raw is None else JobRecord.model_validate_json(raw), current)
            if write is not None:
                pipe.multi()
                self.write_job(pipe, write, ttl_s)
                pipe.execute()
            return answer

        return self._transact(attempt)

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        raw, tenant_raw = self.client.mget([self.k("job", job_id), self.k("tenant", tenant)])
        if raw is None or tenant_raw is None:
            return None
        current = TenantRecord.model_validate_json(tenant_raw).epoch
        return job_updates.visible(JobRecord.model_validate_json(raw), tenant, current)

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        key = self.k("job", job_id)

        def attempt(pipe: redis.client.Pipeline) -> JobRecord | None:
            current = self._watch_epoch(pipe, tenant, key)
            raw = pipe.get(key)
            job = None if raw is None else job_updates.visible(JobRecord.model_validate_json(raw), tenant, current)
            if job is None or job.terminal:
                return job
            job.cancel_requested = True
            ttl = pipe.ttl(key)
            pipe.multi()
            pipe.set(key, job.model_dump_json(), ex=max(1, ttl))
            pipe.execute()
            return job

        job = self._transact(attempt)
        if job is not None and not job.terminal:
            # its runner, on whichever replica, drops its rows at its engine's next tick instead of at its next
            # heartbeat; a message lost here costs only that heartbeat's wait
            with contextlib.suppress(redis.RedisError):
                self.client.publish(self.cancel_channel, job.id)
        return job

    def claim_stale_jobs(self, owner: str, stale_after_s: float, ttl_s: int) -> list[JobRecord]:
        now = time.time()
        open_jobs = self.k("jobs", "open")
        claimed = []
        for raw_id in self.client.zrangebyscore(open_jobs, "-inf", now - stale_after_s):
            job_id = raw_id.decode()
            key = self.k("job", job_id)
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key, open_jobs)
                    raw = pipe.get(key)
                    job = None if raw is None else JobRecord.model_validate_json(raw)
                    if job is not None and (job.terminal or now - job.heartbeat < stale_after_s):
                        pipe.unwatch()
                        continue
                    if job is None or job.epoch != self._watch_epoch(pipe, job.tenant):
                        pipe.multi()  # an expired record, or a deleted tenant's job: nobody runs it again
                        pipe.delete(key)
                        pipe.zrem(open_jobs, job_id)
                        pipe.execute()
                        continue
                    job.owner, job.heartbeat = owner, now
                    pipe.multi()
                    self.write_job(pipe, job, ttl_s)
                    pipe.execute()
                    claimed.append(job)
                except redis.WatchError:
                    continue  # another replica claimed it first
        return claimed

    def put_files(self, tenant: str, files: Mapping[str, bytes], ttl_s: int, epoch: str | None = None) -> None:
        size = sum(len(data) for data in files.values())

        def attempt(pipe: redis.client.Pipeline) -> None:
            current = check_epoch(tenant, epoch, self._watch_epoch(pipe, tenant))
            index = self.k("tenant_files", tenant, current)
            pipe.watch(index)  # with the tenant's record: a racing writer or a delete aborts the EXEC
            now = time.time()
            held = _file_entries(pipe.zrangebyscore(index, _after(now), "+inf", withscores=True))
            replaced = {k: v for k, v in held.items() if k in files}  # the same id written again counts once
            usage = summarize({}, {k: v for k, v in held.items() if k not in files}, now)
            check_files(usage, self.quota, len(files), size, now)
            pipe.multi()
            for file_id, data in files.items():
                pipe.set(self.k("file", tenant, current, file_id), data, ex=ttl_s)
            if replaced:
                pipe.zrem(index, *(f"{k} {n}" for k, (_, n) in replaced.items()))
            pipe.zadd(index, {f"{k} {len(data)}": now + ttl_s for k, data in files.items()})
            pipe.zremrangebyscore(index, "-inf", now)
            self._expire_with(pipe, index, ttl_s)
            pipe.execute()

        if files:
            self._transact(attempt)

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int, epoch: str | None = None) -> None:
        self.put_files(tenant, {file_id: data}, ttl_s, epoch)

    def get_file(self, tenant: str, file_id: str) -> bytes | None:
        record = self.get_tenant(tenant)
        return None if record is None else self.client.get(self.k("file", tenant, record.epoch, file_id))

    # -- rate limits, health ------------------------------------------------------------------------------
    def rate_hit(self, tenant: str, limit: int, window_s: int = 60, epoch: str = "") -> float:
        now = time.time()
        window = int(now // window_s)
        key = self.k("rate", tenant, epoch, str(window))
        with self.client.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s + 1, nx=True)
            count, _ = pipe.execute()
        return 0.0 if count <= limit else (window + 1) * window_s - now

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(timeout=5)
            self._listener = None
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        self.client.close()
