"""`RedisStore`: shared state for several replicas.

Keys (all under `prefix`):
    tenants                      set of tenant names
    tenant:<name>                TenantRecord JSON
    key:<key id>                 hash {tenant, salt, digest}   (never the key itself)
    tenant_keys:<name>           set of key ids
    adapters:<tenant>            hash name -> AdapterMeta JSON
    blob:<tenant>:<name>:<sha>   the uploaded file
    job:<id>                     JobRecord JSON, with TTL
    jobs:open                    sorted set id -> heartbeat, of unfinished jobs
    jobs:stream                  the job queue of `diffplex worker` (stores/job_stream.py)
    file:<tenant>:<id>           PNG bytes, with TTL
    rate:<tenant>:<window>       counter, expires with its window
    channel adapters.changed     "<tenant>\\0<name>" on every adapter write / delete

Read-modify-write sections (quota checks, cancel, claims) use WATCH / MULTI, so two replicas racing on
the same tenant serialize. Pub/sub only frees cache memory early: the adapter cache re-checks each
adapter's sha256 against the metadata read per request, so a missed message cannot serve a stale adapter.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from service import keys
from service.settings import RedisClientSettings
from service.stores import job_updates
from service.stores.base import (
    AdapterMeta,
    ChangeCallback,
    Conflict,
    JobRecord,
    NotFound,
    Quota,
    TenantRecord,
)
from service.stores.quota import check_quota
from service.stores.redis_client import redis_client

log = logging.getLogger(__name__)


class RedisStore:
    def __init__(self, url: str, prefix: str = "diffplex:", options: RedisClientSettings | None = None) -> None:
        self.prefix = prefix
        self.client = redis_client(url, options or RedisClientSettings())
        self.channel = f"{prefix}adapters.changed"
        self._callbacks: list[ChangeCallback] = []
        self._pubsub: redis.client.PubSub | None = None
        self._listener: redis.client.PubSubWorkerThread | None = None

    def k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- tenants and keys ---------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> str:
        api_key, record = keys.new_key()
        if not self.client.set(self.k("tenant", name), TenantRecord(name=name).model_dump_json(), nx=True):
            raise Conflict(f"tenant {name!r} exists already")
        with self.client.pipeline() as pipe:
            pipe.hset(
                self.k("key", record.key_id), mapping={"tenant": name, "salt": record.salt, "digest": record.digest}
            )
            pipe.sadd(self.k("tenant_keys", name), record.key_id)
            pipe.sadd(self.k("tenants"), name)
            pipe.execute()
        return api_key

    def delete_tenant(self, name: str) -> bool:
        if not self.client.delete(self.k("tenant", name)):
            return False
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
        for meta in metas:
            self._publish(name, meta.name)
        return True

    def list_tenants(self) -> list[TenantRecord]:
        names = sorted(n.decode() for n in self.client.smembers(self.k("tenants")))
        raws = self.client.mget([self.k("tenant", n) for n in names]) if names else []
        return [TenantRecord.model_validate_json(r) for r in raws if r is not None]

    def authenticate(self, api_key: str) -> str | None:
        parts = keys.split_key(api_key)
        if parts is None:
            return None
        raw = self.client.hgetall(self.k("key", parts[0]))
        if not raw:
            return None
        record = keys.KeyRecord(parts[0], raw[b"salt"].decode(), raw[b"digest"].decode())
        if not keys.matches(record, parts[1]):
            return None
        tenant = raw[b"tenant"].decode()
        return tenant if self.client.exists(self.k("tenant", tenant)) else None

    # -- adapters -----------------------------------------------------------------------------------------
    def put_adapter(self, tenant: str, meta: AdapterMeta, blob: bytes, quota: Quota) -> AdapterMeta | None:
        index, tenant_key = self.k("adapters", tenant), self.k("tenant", tenant)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(index, tenant_key)
                    if not pipe.exists(tenant_key):
                        raise NotFound(f"tenant {tenant!r} does not exist")
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

    def get_adapter(self, tenant: str, name: str) -> AdapterMeta | None:
        raw = self.client.hget(self.k("adapters", tenant), name)
        return None if raw is None else AdapterMeta.model_validate_json(raw)

    def list_adapters(self, tenant: str) -> list[AdapterMeta]:
        metas = [AdapterMeta.model_validate_json(v) for v in self.client.hvals(self.k("adapters", tenant))]
        return sorted(metas, key=lambda m: m.name)

    def adapter_blob(self, tenant: str, name: str, sha256: str) -> bytes | None:
        return self.client.get(self.k("blob", tenant, name, sha256))

    def delete_adapter(self, tenant: str, name: str) -> bool:
        index = self.k("adapters", tenant)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(index)
                    raw = pipe.hget(index, name)
                    if raw is None:
                        return False
                    meta = AdapterMeta.model_validate_json(raw)
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
        """The first subscriber starts one listener thread (redis-py's PubSubWorkerThread) per store."""
        self._callbacks.append(callback)
        if self._listener is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(**{self.channel: self._on_message})
            self._listener = self._pubsub.run_in_thread(
                sleep_time=1.0, daemon=True, exception_handler=self._on_listener_error
            )

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    @staticmethod
    def _on_listener_error(error: BaseException, pubsub: redis.client.PubSub, thread: object) -> None:
        """Keep listening through a Redis outage: redis-py re-subscribes when the connection comes back.
        Messages missed meanwhile cost only memory (the cache checks versions per request)."""
        log.warning("adapter change listener lost Redis; retrying", extra={"error": str(error)})
        time.sleep(1.0)

    def _on_message(self, message: dict) -> None:
        tenant, _, name = message["data"].decode().partition("\0")
        for callback in list(self._callbacks):
            try:
                callback(tenant, name)
            except Exception:  # noqa: BLE001 - one bad subscriber must not stop the listener thread
                log.exception("adapter change callback failed")

    # -- jobs and files -----------------------------------------------------------------------------------
    def write_job(self, pipe: redis.client.Pipeline, job: JobRecord, ttl_s: int) -> None:
        """Queue the writes of one job record on `pipe` (also used inside the job stream's transactions)."""
        pipe.set(self.k("job", job.id), job.model_dump_json(), ex=ttl_s)
        if job.terminal:
            pipe.zrem(self.k("jobs", "open"), job.id)
        else:
            pipe.zadd(self.k("jobs", "open"), {job.id: job.heartbeat})

    def put_job(self, job: JobRecord, ttl_s: int) -> None:
        with self.client.pipeline() as pipe:
            self.write_job(pipe, job, ttl_s)
            pipe.execute()

    def _update_job(
        self, job_id: str, rule: Callable[[JobRecord | None], tuple[JobRecord | None, Any]], ttl_s: int
    ) -> Any:
        """Apply a job_updates rule atomically: WATCH the record, decide, write in MULTI (retry on a race)."""
        key = self.k("job", job_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    write, answer = rule(None if raw is None else JobRecord.model_validate_json(raw))
                    if write is None:
                        pipe.unwatch()
                        return answer
                    pipe.multi()
                    self.write_job(pipe, write, ttl_s)
                    pipe.execute()
                    return answer
                except redis.WatchError:
                    continue

    def save_progress(self, job: JobRecord, ttl_s: int) -> JobRecord:
        return self._update_job(job.id, lambda stored: job_updates.progress(stored, job), ttl_s)

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        return self._update_job(job.id, lambda stored: job_updates.completion(stored, job), ttl_s)

    def claim_job(self, tenant: str, job_id: str, owner: str, ttl_s: int) -> JobRecord | None:
        return self._update_job(job_id, lambda stored: job_updates.claim(stored, tenant, owner), ttl_s)

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        raw = self.client.get(self.k("job", job_id))
        if raw is None:
            return None
        job = JobRecord.model_validate_json(raw)
        return job if job.tenant == tenant else None

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        key = self.k("job", job_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    job = JobRecord.model_validate_json(raw)
                    if job.tenant != tenant:
                        return None
                    if job.terminal:
                        return job
                    job.cancel_requested = True
                    ttl = pipe.ttl(key)
                    pipe.multi()
                    pipe.set(key, job.model_dump_json(), ex=max(1, ttl))
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

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
                    if raw is None:
                        pipe.multi()
                        pipe.zrem(open_jobs, job_id)  # expired record
                        pipe.execute()
                        continue
                    job = JobRecord.model_validate_json(raw)
                    if job.terminal or now - job.heartbeat < stale_after_s:
                        pipe.unwatch()
                        continue
                    job.owner, job.heartbeat = owner, now
                    pipe.multi()
                    pipe.set(key, job.model_dump_json(), ex=ttl_s)
                    pipe.zadd(open_jobs, {job_id: now})
                    pipe.execute()
                    claimed.append(job)
                except redis.WatchError:
                    continue  # another replica claimed it first
        return claimed

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int) -> None:
        self.client.set(self.k("file", tenant, file_id), data, ex=ttl_s)

    def get_file(self, tenant: str, file_id: str) -> bytes | None:
        return self.client.get(self.k("file", tenant, file_id))

    # -- rate limits, health ------------------------------------------------------------------------------
    def rate_hit(self, tenant: str, limit: int, window_s: int = 60) -> float:
        now = time.time()
        window = int(now // window_s)
        key = self.k("rate", tenant, str(window))
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
