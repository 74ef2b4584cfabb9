"""`LocalStore`: the embedded store, a directory of JSON files and blobs.

Every write goes to a temporary file and is `os.replace`d into place, so a reader (or a crash) never sees
half a file; writes that read-modify-write (quotas, rate windows, job claims) hold an `fcntl` lock on
`<dir>/.lock`, so several processes may share the directory. Change and cancel notifications are in-process
callbacks: processes sharing the directory still see every change on their next request, because the
adapter cache checks each adapter's version against the metadata it reads per request, and a job's runner
reads a cancel made by another process at its next heartbeat.

Layout:
    tenants/<tenant>.json              {name, created, epoch}
    keys/<key id>.json                 {tenant, epoch, salt, digest}
    adapters/<tenant>/<name>.json      AdapterMeta
    adapters/<tenant>/<name>.<sha256>  the uploaded file
    jobs/<tenant>/<id>.json            JobRecord + expires
    files/<tenant>/<epoch>/<id>.png    generated images; mtime = expiry time
    rates/<tenant>.json                {window, counts: {epoch: requests}}
    usage/<tenant>.json                {epoch, jobs: {id: [expires, work, bytes]}, files: {id: [expires, bytes]}}

Deleting a tenant removes its adapters/, jobs/ and files/ directories and its usage index under the lock, and
every job or file write checks the tenant's epoch under the same lock (stores/base.py: epochs), so a write that
comes after the delete is refused instead of re-creating a directory the next tenant of that name would read.

The usage index is what the storage quota counts (stores/usage.py): a new job's record and every file are
added to it, checked, under the lock; a job's later writes update it only when it finishes (its work leaves
the unfinished sum, its expiry moves, its bytes are counted again with its result, checked), not on every
heartbeat. It is written without fsync: a power cut can
only lose recent entries, which undercounts until they expire, never refuses a tenant wrongly.

A process killed inside `atomic_write` leaves its temporary file (`.<name>.<random>.tmp`, next to the target:
an adapter upload's can be 64 MiB); opening the store removes them. Every write holds the lock, so one taken
for the sweep means no other process is half-way through one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict

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
from service.stores.usage import check_files, check_job, check_result, check_work, live, record_bytes, summarize
from service.tenants import keys
from service.tenants.names import ADAPTER_NAME, TENANT_NAME

log = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"\..+\.tmp")  # atomic_write's temporary files; no stored name starts with "."


class Index(TypedDict):
    """A tenant incarnation's usage index, as read under the lock (live entries only)."""

    jobs: dict[str, tuple[float, int, int]]  # id -> (expires, unfinished work, record bytes)
    files: dict[str, tuple[float, int]]  # id -> (expires, bytes)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Readers see the old or the new content, never a mix; `durable` also survives a power cut (fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _safe(pattern: re.Pattern[str], name: str) -> str:
    """Names become path components: anything outside the allowed alphabet maps to a name that never exists."""
    return name if pattern.fullmatch(name) and ".." not in name else "_invalid_"


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


class LocalStore(job_updates.ConditionalJobWrites):
    def __init__(self, root: Path, quota: StorageQuota | None = None) -> None:
        self.root = Path(root)
        self.quota = quota or StorageQuota()
        for sub in ("tenants", "keys", "adapters", "jobs", "files", "rates", "usage"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._callbacks: list[ChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
        self._callbacks_lock = threading.Lock()
        self._thread_lock = threading.Lock()  # flock is per open file description; threads need their own lock
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Temporary files of writes a killed process never finished (see the module's docstring)."""
        removed = 0
        with self._locked():
            for directory, _, names in os.walk(self.root):
                for name in names:
                    if TEMP_NAME.fullmatch(name):
                        Path(directory, name).unlink(missing_ok=True)
                        removed += 1
        if removed:
            log.info("removed temporary files of interrupted writes", extra={"files": removed})

    # -- plumbing -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _notify(self, tenant: str, name: str) -> None:
        with self._callbacks_lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(tenant, name)

    def _tenant_path(self, name: str) -> Path:
        return self.root / "tenants" / f"{_safe(TENANT_NAME, name)}.json"

    def _adapter_dir(self, tenant: str) -> Path:
        return self.root / "adapters" / _safe(TENANT_NAME, tenant)

    def _adapter_path(self, tenant: str, name: str, suffix: str) -> Path:
        return self._adapter_dir(tenant) / f"{_safe(ADAPTER_NAME, name)}.{suffix}"

    def _rate_path(self, tenant: str) -> Path:
        return self.root / "rates" / f"{_safe(TENANT_NAME, tenant)}.json"

    def _jobs_dir(self, tenant: str) -> Path:
        return self.root / "jobs" / _safe(TENANT_NAME, tenant)

    def _job_path(self, tenant: str, job_id: str) -> Path:
        return self._jobs_dir(tenant) / f"{job_id}.json"

    def _files_dir(self, tenant: str) -> Path:
        return self.root / "files" / _safe(TENANT_NAME, tenant)

    def _file_path(self, tenant: str, epoch: str, file_id: str) -> Path:
        return self._files_dir(tenant) / epoch / f"{file_id}.png"  # epoch "": files/<tenant>/<id>.png

    def _usage_path(self, tenant: str) -> Path:
        return self.root / "usage" / f"{_safe(TENANT_NAME, tenant)}.json"

    def _epoch(self, tenant: str) -> str | None:
        record = self.get_tenant(tenant)
        return None if record is None else record.epoch

    def _read_index(self, tenant: str, epoch: str, now: float) -> Index:
        """The live entries of that incarnation's usage index (empty for another incarnation's or a damaged one:
        undercounting until its entries would have expired beats refusing the tenant forever)."""
        try:
            raw = _read_json(self._usage_path(tenant)) or {}
        except ValueError:
            log.warning("unreadable usage index: counting from empty", extra={"tenant": tenant})
            raw = {}
        if raw.get("epoch") != epoch:
            raw = {}
        # an entry without bytes (an index of the release before job bytes were counted) counts 0 until it expires
        jobs = {k: (float(e[0]), int(e[1]), int(e[2]) if len(e) > 2 else 0) for k, e in raw.get("jobs", {}).items()}
        files = {k: (float(e), int(n)) for k, (e, n) in raw.get("files", {}).items()}
        return Index(jobs=live(jobs, now), files=live(files, now))

    def _write_index(self, tenant: str, epoch: str, index: Index) -> None:
        body = {"epoch": epoch, **{kind: {k: list(v) for k, v in entries.items()} for kind, entries in index.items()}}
        atomic_write(self._usage_path(tenant), json.dumps(body).encode(), durable=False)

    # -- tenants and keys ---------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> str:
        with self._locked():
            if self._tenant_path(name).exists():
                raise Conflict(f"tenant {name!r} exists already")
            api_key, record = keys.new_key()
            tenant = TenantRecord.new(name)
            atomic_write(self._tenant_path(name), tenant.model_dump_json().encode())
            key = {"tenant": name, "epoch": tenant.epoch, "salt": record.salt, "digest": record.digest}
            atomic_write(self.root / "keys" / f"{record.key_id}.json", json.dumps(key).encode())
        return api_key

    def delete_tenant(self, name: str) -> bool:
        with self._locked():
            if not self._tenant_path(name).exists():
                return False
            for path in (self.root / "keys").glob("*.json"):
                if (_read_json(path) or {}).get("tenant") == name:
                    path.unlink(missing_ok=True)
            adapters = [p.stem for p in self._adapter_dir(name).glob("*.json")]
            for directory in (self._adapter_dir(name), self._jobs_dir(name), self._files_dir(name)):
                if directory.exists():
                    shutil.rmtree(directory)
            self._rate_path(name).unlink(missing_ok=True)
            self._usage_path(name).unlink(missing_ok=True)
            self._tenant_path(name).unlink()  # last: a delete that failed half-way can be run again
        for adapter in adapters:
            self._notify(name, adapter)
        return True

    def get_tenant(self, name: str) -> TenantRecord | None:
        raw = _read_json(self._tenant_path(name))
        return None if raw is None else TenantRecord.model_validate(raw)

    def list_tenants(self) -> list[TenantRecord]:
        records = (_read_json(p) for p in sorted((self.root / "tenants").glob("*.json")))
        return [TenantRecord.model_validate(r) for r in records if r is not None]

    def authenticate(self, api_key: str) -> TenantRecord | None:
        parts = keys.split_key(api_key)
        if parts is None or not parts[0].isalnum():
            return None
        raw = _read_json(self.root / "keys" / f"{parts[0]}.json")
        if raw is None or not keys.matches(keys.KeyRecord(parts[0], raw["salt"], raw["digest"]), parts[1]):
            return None
        # the key's epoch too: a key left behind never opens a re-created tenant of that name
        tenant = self.get_tenant(raw["tenant"])
        return tenant if tenant is not None and tenant.epoch == raw.get("epoch", "") else None

    # -- adapters -----------------------------------------------------------------------------------------
    def put_adapter(
        self, tenant: str, meta: AdapterMeta, blob: bytes, quota: Quota, epoch: str | None = None
    ) -> AdapterMeta | None:
        with self._locked():
            meta = stamp_epoch(tenant, meta, epoch, self._epoch(tenant))
            others = [m for m in self._list(tenant)]
            previous = next((m for m in others if m.name == meta.name), None)
            check_quota([m for m in others if m.name != meta.name], meta, quota)
            atomic_write(self._adapter_path(tenant, meta.name, meta.sha256), blob)
            atomic_write(self._adapter_path(tenant, meta.name, "json"), meta.model_dump_json().encode())
            if previous is not None and previous.sha256 != meta.sha256:
                self._adapter_path(tenant, previous.name, previous.sha256).unlink(missing_ok=True)
        self._notify(tenant, meta.name)
        return previous

    def _list(self, tenant: str) -> list[AdapterMeta]:
        metas = (_read_json(p) for p in sorted(self._adapter_dir(tenant).glob("*.json")))
        return [AdapterMeta.model_validate(m) for m in metas if m is not None]

    def get_adapter(self, tenant: str, name: str, epoch: str | None = None) -> AdapterMeta | None:
        raw = _read_json(self._adapter_path(tenant, name, "json"))
        meta = None if raw is None else AdapterMeta.model_validate(raw)
        return meta if meta is not None and meta.visible_to(epoch) else None

    def list_adapters(self, tenant: str, epoch: str | None = None) -> list[AdapterMeta]:
        return [m for m in self._list(tenant) if m.visible_to(epoch)]

    def adapter_blob(self, tenant: str, name: str, sha256: str) -> bytes | None:
        try:
            return self._adapter_path(tenant, name, sha256).read_bytes()
        except FileNotFoundError:
            return None

    def delete_adapter(self, tenant: str, name: str, epoch: str | None = None) -> bool:
        with self._locked():
            check_epoch(tenant, epoch, self._epoch(tenant))
            meta = self.get_adapter(tenant, name, epoch)
            if meta is None:
                return False
            self._adapter_path(tenant, name, "json").unlink(missing_ok=True)
            self._adapter_path(tenant, name, meta.sha256).unlink(missing_ok=True)
        self._notify(tenant, name)
        return True

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        return self._subscribe_to(self._callbacks, callback)

    def subscribe_cancels(self, callback: CancelCallback) -> Callable[[], None]:
        return self._subscribe_to(self._cancel_callbacks, callback)

    def _subscribe_to(self, callbacks: list[Any], callback: Any) -> Callable[[], None]:
        with self._callbacks_lock:
            callbacks.append(callback)

        def unsubscribe() -> None:
            with self._callbacks_lock, contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    # -- jobs and files -----------------------------------------------------------------------------------
    def _write_job(self, job: JobRecord, ttl_s: int, index: Index | None = None, size: int | None = None) -> None:
        """The caller holds the lock and has checked the job's epoch. The usage index is updated when the caller
        passes it (read under this lock) or the job is finished: a heartbeat leaves it alone (its record's
        size barely changes: stores/usage.py). `size`: `record_bytes(job)`, when the caller measured it."""
        now = time.time()
        body = job.model_dump(mode="json") | {"expires": now + ttl_s}
        # compact, as Redis stores it: what the file takes is what its quota counts (`record_bytes`, + expires)
        compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        atomic_write(self._job_path(job.tenant, job.id), compact)
        if index is None and job.terminal:
            index = self._read_index(job.tenant, job.epoch, now)
        if index is not None:
            size = record_bytes(job) if size is None else size
            index["jobs"][job.id] = (now + ttl_s, 0 if job.terminal else job.total, size)
            self._write_index(job.tenant, job.epoch, index)

    def put_job(self, job: JobRecord, ttl_s: int) -> None:
        with self._locked():
            job_updates.require_current(job, self._epoch(job.tenant))
            self._write_job(job, ttl_s, self._read_index(job.tenant, job.epoch, time.time()))

    def create_job(self, job: JobRecord, ttl_s: int, max_work: int | None = None) -> None:
        with self._locked():
            job_updates.require_current(job, self._epoch(job.tenant))
            now = time.time()
            index = self._read_index(job.tenant, job.epoch, now)
            others = {k: v for k, v in index["jobs"].items() if k != job.id}  # a retried write is not a second job
            usage, size = summarize(others, {}, now), record_bytes(job)
            if job.id not in index["jobs"]:
                check_job(usage, self.quota, ttl_s, now, size)
            check_work(usage.unfinished_work, job.total, max_work)
            self._write_job(job, ttl_s, index, size)

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        """`Store.complete_job`: the completion rule, and a record carrying a result checked against the tenant's
        job bytes, under the lock."""
        with self._locked():
            write, answer = job_updates.completion(self._load_job(job.tenant, job.id), job, self._epoch(job.tenant))
            if write is None:
                return answer
            now = time.time()
            index, size = self._read_index(job.tenant, job.epoch, now), record_bytes(write)
            if write.result is not None:  # a failure or cancellation is never refused: the job must end
                others = {k: v for k, v in index["jobs"].items() if k != job.id}
                check_result(summarize(others, {}, now), self.quota, size, ttl_s, now)
            self._write_job(write, ttl_s, index, size)
        return answer

    def delete_job(self, tenant: str, job_id: str) -> bool:
        with self._locked():
            job = self.get_job(tenant, job_id)
            if job is None or not job.terminal:
                return False
            self._job_path(tenant, job_id).unlink(missing_ok=True)
            index = self._read_index(tenant, job.epoch, time.time())
            index["jobs"].pop(job_id, None)
            self._write_index(tenant, job.epoch, index)
        return True

    def usage(self, tenant: str, epoch: str | None = None) -> TenantUsage:
        current = self._epoch(tenant)
        if current is None or epoch not in (None, current):
            return TenantUsage()
        now = time.time()
        index = self._read_index(tenant, current, now)
        return summarize(index["jobs"], index["files"], now)

    def _load_job(self, tenant: str, job_id: str) -> JobRecord | None:
        if not job_id.replace("-", "").replace("_", "").isalnum():
            return None
        path = self._job_path(tenant, job_id)
        raw = _read_json(path)
        if raw is None:
            return None
        if raw.pop("expires", 0) < time.time():
            path.unlink(missing_ok=True)
            return None
        return JobRecord.model_validate(raw)

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        job = self._load_job(tenant, job_id)
        return None if job is None else job_updates.visible(job, tenant, self._epoch(tenant))

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        with self._locked():
            job = self.get_job(tenant, job_id)
            if job is None:
                return None
            if not job.terminal:
                job.cancel_requested = True
                raw = _read_json(self._job_path(tenant, job_id)) or {}
                self._write_job(job, max(1, int(raw.get("expires", time.time() + 60) - time.time())))
        if not job.terminal:  # after the lock: a callback may read the store
            with self._callbacks_lock:
                callbacks = list(self._cancel_callbacks)
            for callback in callbacks:
                try:
                    callback(job.id)
                except Exception:
                    log.exception("job cancel callback failed")
        return job

    def claim_stale_jobs(self, owner: str, stale_after_s: float, ttl_s: int) -> list[JobRecord]:
        claimed = []
        now = time.time()
        with self._locked():
            for path in (self.root / "jobs").glob("*/*.json"):
                job = self._load_job(path.parent.name, path.stem)
                if job is None or job.terminal or now - job.heartbeat < stale_after_s:
                    continue
                if job.epoch != self._epoch(job.tenant):  # a deleted tenant's: nobody may run it again
                    path.unlink(missing_ok=True)
                    continue
                job.owner, job.heartbeat = owner, now
                self._write_job(job, ttl_s)
                claimed.append(job)
        return claimed

    def _update_job(
        self,
        tenant: str,
        job_id: str,
        rule: Callable[[JobRecord | None, str | None], tuple[JobRecord | None, Any]],
        ttl_s: int,
    ) -> Any:
        with self._locked():
            write, answer = rule(self._load_job(tenant, job_id), self._epoch(tenant))
            if write is not None:
                self._write_job(write, ttl_s)
        return answer

    def put_files(self, tenant: str, files: Mapping[str, bytes], ttl_s: int, epoch: str | None = None) -> None:
        with self._locked():
            current = check_epoch(tenant, epoch, self._epoch(tenant))
            now = time.time()
            index = self._read_index(tenant, current, now)
            usage = summarize({}, {k: v for k, v in index["files"].items() if k not in files}, now)
            check_files(usage, self.quota, len(files), sum(len(data) for data in files.values()), now)
            expires, written = now + ttl_s, []
            try:
                for file_id, data in files.items():
                    path = self._file_path(tenant, current, file_id)
                    atomic_write(path, data)
                    written.append(path)
                    os.utime(path, (expires, expires))
                    index["files"][file_id] = (expires, len(data))
            except BaseException:  # all or none: a full disk must not leave files the index does not count
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            self._write_index(tenant, current, index)

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int, epoch: str | None = None) -> None:
        self.put_files(tenant, {file_id: data}, ttl_s, epoch)

    def get_file(self, tenant: str, file_id: str) -> bytes | None:
        epoch = self._epoch(tenant)
        if epoch is None or not file_id.replace("-", "").replace("_", "").isalnum():
            return None
        path = self._file_path(tenant, epoch, file_id)
        try:
            if path.stat().st_mtime < time.time():
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    # -- rate limits, health ------------------------------------------------------------------------------
    def rate_hit(self, tenant: str, limit: int, window_s: int = 60, epoch: str = "") -> float:
        now = time.time()
        window = int(now // window_s)
        path = self._rate_path(tenant)
        with self._locked():
            raw = _read_json(path) or {}
            counts = raw.get("counts", {}) if raw.get("window") == window else {}
            if counts.get(epoch, 0) >= limit:
                return (window + 1) * window_s - now
            counts[epoch] = counts.get(epoch, 0) + 1
            atomic_write(path, json.dumps({"window": window, "counts": counts}).encode(), durable=False)
        return 0.0

    def ping(self) -> bool:
        return self.root.is_dir()

    def close(self) -> None:
        with self._callbacks_lock:
            self._callbacks.clear()
            self._cancel_callbacks.clear()
