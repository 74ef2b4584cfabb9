"""`LocalStore`: the embedded store, a directory of JSON files and blobs.

Every write goes to a temporary file and is `os.replace`d into place, so a reader (or a crash) never sees
half a file; writes that read-modify-write (quotas, rate windows, job claims) hold an `fcntl` lock on
`<dir>/.lock`, so several processes may share the directory. Change notifications are in-process
callbacks: processes sharing the directory still see every change on their next request, because the
adapter cache checks each adapter's version against the metadata it reads per request.

Layout:
    tenants/<tenant>.json              {name, created, epoch}
    keys/<key id>.json                 {tenant, epoch, salt, digest}
    adapters/<tenant>/<name>.json      AdapterMeta
    adapters/<tenant>/<name>.<sha256>  the uploaded file
    jobs/<tenant>/<id>.json            JobRecord + expires
    files/<tenant>/<epoch>/<id>.png    generated images; mtime = expiry time
    rates/<tenant>.json                {window, counts: {epoch: requests}}

Deleting a tenant removes its adapters/, jobs/ and files/ directories under the lock, and every job or file
write checks the tenant's epoch under the same lock (stores/base.py: epochs), so a write that comes after
the delete is refused instead of re-creating a directory the next tenant of that name would read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from service import keys
from service.names import ADAPTER_NAME, TENANT_NAME
from service.stores import job_updates
from service.stores.base import (
    AdapterMeta,
    ChangeCallback,
    Conflict,
    JobRecord,
    Quota,
    TenantRecord,
    check_epoch,
    stamp_epoch,
)
from service.stores.quota import check_quota


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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("tenants", "keys", "adapters", "jobs", "files", "rates"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._callbacks: list[ChangeCallback] = []
        self._callbacks_lock = threading.Lock()
        self._thread_lock = threading.Lock()  # flock is per open file description; threads need their own lock

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

    def _epoch(self, tenant: str) -> str | None:
        record = self.get_tenant(tenant)
        return None if record is None else record.epoch

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
        with self._callbacks_lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._callbacks_lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    # -- jobs and files -----------------------------------------------------------------------------------
    def _write_job(self, job: JobRecord, ttl_s: int) -> None:
        """The caller holds the lock and has checked the job's epoch."""
        body = job.model_dump(mode="json") | {"expires": time.time() + ttl_s}
        atomic_write(self._job_path(job.tenant, job.id), json.dumps(body).encode())

    def put_job(self, job: JobRecord, ttl_s: int) -> None:
        with self._locked():
            job_updates.require_current(job, self._epoch(job.tenant))
            self._write_job(job, ttl_s)

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

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int, epoch: str | None = None) -> None:
        with self._locked():
            path = self._file_path(tenant, check_epoch(tenant, epoch, self._epoch(tenant)), file_id)
            atomic_write(path, data)
            expires = time.time() + ttl_s
            os.utime(path, (expires, expires))

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
