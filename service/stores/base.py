"""The shared state every replica sees, behind one interface: tenants and their hashed API keys, adapter
metadata and blobs per tenant namespace, job records and generated files with a TTL, per-tenant rate
windows, and two notifications: "adapter changed" and "job cancel requested".

Two implementations: `LocalStore` (a directory; the embedded default) and `RedisStore`. Every method that
takes a tenant only ever touches that tenant's namespace, so scoping is enforced here and not in each
route.

A tenant name can be deleted and created again, possibly for another customer, so jobs and files belong to
one *incarnation* of the name: its `epoch`, a random id given at creation. Deleting a tenant removes its
job records and files, and every job or file write checks, atomically with the write, that the epoch it
was made for is still the tenant's current one (`TenantGone` otherwise); reads only see records of the
current epoch. Deletion alone would race with a worker that finishes a deleted tenant's job just after the
delete (its late write would land in the re-created tenant's namespace); epochs alone would keep the old
data stored until it expires. Together, nothing of a deleted tenant is kept, and nothing written late
reaches a later tenant of the same name. Adapters follow the same rule: a request passes the epoch it
authenticated with to adapter writes (checked with the write), adapter reads (an adapter is stamped with
the epoch it was written under) and its rate window (counted per incarnation).

Storage quotas: what a tenant incarnation keeps for `job_ttl_s` is bounded by the store's `StorageQuota`
(job records by count and bytes, url files by count and bytes), checked atomically with the write that would
pass it (`create_job`, `complete_job`, `put_files`) against a per-incarnation index of live entries that the
store keeps with the records (stores/usage.py). The same index sums the `total` of its unfinished jobs, the
work it has waiting.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from adapters.errors import DiffplexError

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ChangeCallback = Callable[[str, str], None]  # (tenant, adapter name)
CancelCallback = Callable[[str], None]  # (job id)


class StoreError(DiffplexError):
    """Base of the errors a store raises for a request it cannot honour."""


class Conflict(StoreError):
    """The thing to create exists already."""

    status, code = 409, "conflict"


class NotFound(StoreError):
    """The tenant (or adapter) the write is for does not exist."""

    status, code = 404, "not_found"


class TenantGone(NotFound):
    """The tenant incarnation a job or file belongs to was deleted (the name may exist again: a new tenant,
    a new epoch). Its writes are refused; a runner drops the job. Over HTTP, a 404 like `NotFound`."""


def check_epoch(tenant: str, epoch: str | None, current: str | None) -> str:
    """The epoch to write under: `epoch`, or the current one when None, as long as it is the tenant's current
    epoch (`current`, None when the tenant does not exist); TenantGone otherwise."""
    if current is None or epoch not in (None, current):
        raise TenantGone(f"tenant {tenant!r} does not exist")  # worded as for a tenant that never existed
    return current


def stamp_epoch(tenant: str, meta: AdapterMeta, epoch: str | None, current: str | None) -> AdapterMeta:
    """`meta` as an adapter write stores it: stamped with the tenant's current epoch. NotFound when the tenant
    does not exist, TenantGone when `epoch` (the request's) is not its current one."""
    if current is None:
        raise NotFound(f"tenant {tenant!r} does not exist")
    return meta.model_copy(update={"epoch": check_epoch(tenant, epoch, current)})


class QuotaExceeded(StoreError):
    """A tenant's adapter count or bytes would go over its quota; the message says which and by how much."""

    status, type, code = 403, "insufficient_quota", "quota_exceeded"


class Quota(BaseModel):
    max_count: int
    max_bytes: int


class WorkCapExceeded(StoreError):
    """`create_job` with `max_work`: the tenant's unfinished jobs and this one would pass it. Not a quota (the
    work finishes within minutes): the job manager answers it like the engine's TenantBusy (429)."""

    status, type, code = 429, "rate_limit_error", "tenant_busy"

    def __init__(self, message: str, held: int) -> None:
        super().__init__(message)
        self.held = held


class StorageQuota(BaseModel):
    """What one tenant incarnation may keep stored at once, counted over live (unexpired) entries: job records
    and generated files (`response_format: url`), each by count and bytes. A store enforces it atomically with
    the write (`create_job`, `complete_job`, `put_files`); None is no limit (tools, tests)."""

    max_jobs: int | None = None
    # A record's serialized size: a few kB queued, but a finished b64_json job holds its images in it (8 images
    # of 512 px: ~4 MB), so a count alone would let a tenant keep `max_jobs` x that for `job_ttl_s`.
    max_job_bytes: int | None = None
    max_files: int | None = None
    max_file_bytes: int | None = None


class TenantUsage(BaseModel):
    """A tenant incarnation's live job records and files, and its unfinished jobs' work (stores/usage.py)."""

    jobs: int = 0
    job_bytes: int = 0  # serialized size of its job records, as counted at their last counted write
    unfinished_work: int = 0  # sum of `total` (images x steps) of its queued and running job records
    files: int = 0
    file_bytes: int = 0
    jobs_free_at: float | None = None  # when its oldest job record expires (frees a place)
    files_free_at: float | None = None  # likewise its oldest file


class TenantRecord(BaseModel):
    name: str
    created: float = Field(default_factory=time.time)
    # this incarnation of the name (random, set by `create_tenant`): job records carry it and files are
    # stored under it; "" for tenants created before epochs existed
    epoch: str = ""

    @classmethod
    def new(cls, name: str) -> TenantRecord:
        """A new incarnation of `name`: 64 random bits, so a deleted one's epoch never comes back."""
        return cls(name=name, epoch=secrets.token_hex(8))


class AdapterMeta(BaseModel):
    """What the API lists and the adapter cache needs without parsing the blob."""

    name: str
    kind: Literal["lora", "textual_inversion", "vpt"]
    size: int  # bytes of the uploaded file
    sha256: str  # of the uploaded file: names the blob, and versions cache entries
    created: float = Field(default_factory=time.time)
    tokens: list[str] = Field(default_factory=list)  # textual inversion: the prompt tokens it defines
    token_override: str | None = None  # the `token` given at upload, re-applied when the blob is parsed
    detail: dict[str, Any] = Field(default_factory=dict)  # rank, layers, depth, vectors... (for people)
    # The tenant incarnation it was written under (stamped by the store); "" for adapters stored before
    # epochs reached adapters, which only the current incarnation can have (a delete removes adapters).
    epoch: str = ""

    def visible_to(self, epoch: str | None) -> bool:
        """Whether a request authenticated with `epoch` (None: no incarnation check) may read it."""
        return epoch is None or self.epoch in ("", epoch)


class JobRecord(BaseModel):
    id: str
    tenant: str
    epoch: str = ""  # the tenant incarnation it belongs to (TenantRecord.epoch): a later one never sees it
    status: JobStatus = "queued"
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    step: int = 0
    total: int = 0
    request: dict[str, Any] = Field(default_factory=dict)  # the accepted body: enough to run it again
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    owner: str = ""  # replica running it
    heartbeat: float = Field(default_factory=time.time)  # owner's last sign of life (stale -> re-run)
    cancel_requested: bool = False
    attempts: int = 0  # runs started (first delivery and reclaims): a job that keeps killing workers is failed

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Store(Protocol):
    quota: StorageQuota  # per tenant: job records and files (the store enforces it; stores/usage.py)

    # -- tenants and keys ---------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> str:
        """Create `name` and return its first API key (the only time it is visible); Conflict if it exists."""

    def delete_tenant(self, name: str) -> bool:
        """Delete the tenant, its keys and adapters (with change notifications), its job records and files;
        False if it did not exist. A job or file write for it that comes later is refused (`TenantGone`)."""

    def get_tenant(self, name: str) -> TenantRecord | None:
        """The tenant's current incarnation (its `epoch` is what new jobs carry), or None."""

    def list_tenants(self) -> list[TenantRecord]: ...

    def authenticate(self, api_key: str) -> TenantRecord | None:
        """The tenant incarnation owning `api_key` (a key opens only the incarnation it was made for), or
        None. Writes made for the request pass its `epoch`: refused if the tenant was deleted meanwhile."""

    # -- adapters -----------------------------------------------------------------------------------------
    def put_adapter(
        self, tenant: str, meta: AdapterMeta, blob: bytes, quota: Quota, epoch: str | None = None
    ) -> AdapterMeta | None:
        """Create or replace atomically (quota checked against the tenant's other adapters), stamped with the
        tenant's epoch; returns the replaced metadata. NotFound if the tenant does not exist, TenantGone if
        `epoch` (the request's) is no longer its current one, QuotaExceeded over quota."""

    def get_adapter(self, tenant: str, name: str, epoch: str | None = None) -> AdapterMeta | None:
        """None also for an adapter another incarnation than `epoch` wrote (`AdapterMeta.visible_to`)."""

    def list_adapters(self, tenant: str, epoch: str | None = None) -> list[AdapterMeta]:
        """By name; only those visible to `epoch` when given."""

    def adapter_blob(self, tenant: str, name: str, sha256: str) -> bytes | None:
        """The blob of that exact version; None once it was replaced or deleted."""

    def delete_adapter(self, tenant: str, name: str, epoch: str | None = None) -> bool:
        """False if there is no such adapter (visible to `epoch`); TenantGone if `epoch` is not current."""

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(tenant, name)` whenever an adapter is written or deleted (on any replica);
        returns the function that unsubscribes."""

    # -- jobs and files -----------------------------------------------------------------------------------
    def put_job(self, job: JobRecord, ttl_s: int) -> None:
        """Write the record of a job accepted already (never refused for quota); TenantGone unless `job.epoch`
        is its tenant's current epoch."""

    def create_job(self, job: JobRecord, ttl_s: int, max_work: int | None = None) -> None:
        """Write a new job's record, checked atomically with the write: QuotaExceeded when its tenant incarnation
        holds `quota.max_jobs` live records already, or this record would take their bytes past
        `quota.max_job_bytes`; WorkCapExceeded when `max_work` is given and the `total`
        of its unfinished jobs plus this one's would pass it (unless it has none unfinished: one job is always
        admissible); TenantGone as `put_job`."""

    def delete_job(self, tenant: str, job_id: str) -> bool:
        """Remove a finished job's record and its place in the quota (a synchronous request's, once answered);
        False when there is no such job of the tenant's current incarnation or it is unfinished (its runner
        would write it again)."""

    def usage(self, tenant: str, epoch: str | None = None) -> TenantUsage:
        """What the tenant incarnation `epoch` (None: the current one) holds now; empty for a deleted one."""

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        """None for a missing job, another tenant's and a deleted incarnation's (the API answers all with the
        same 404)."""

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord | None:
        """Mark the tenant's unfinished job `cancel_requested` and notify every replica (`subscribe_cancels`);
        from then on the job can only end cancelled (job_updates.completion). A finished job comes back
        unchanged, a missing one (or another tenant's) as None."""

    def subscribe_cancels(self, callback: CancelCallback) -> Callable[[], None]:
        """Call `callback(job_id)` (on a store thread) whenever a cancel is recorded, on any replica that shares
        the store (LocalStore: in this process only); returns the function that unsubscribes. Best effort: a
        runner that misses it reads the flag at its next heartbeat."""

    def claim_stale_jobs(self, owner: str, stale_after_s: float, ttl_s: int) -> list[JobRecord]:
        """Take over unfinished jobs whose owner stopped heart-beating (crashed replica): each is claimed
        by exactly one caller, which runs it again. A deleted incarnation's jobs are removed, not claimed."""

    def save_progress(self, job: JobRecord, ttl_s: int) -> JobRecord:
        """A runner's heartbeat, written only while it owns the unfinished job (job_updates.progress); returns
        the stored record, whose `cancel_requested`, `status` and `owner` tell the runner whether to go on.
        TenantGone: the job's tenant was deleted, the runner drops it."""

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        """The final write, at most once per job (job_updates.completion); False when refused, TenantGone
        when the job's tenant was deleted. QuotaExceeded (nothing written) when it carries a result that would
        take the tenant's job-record bytes past `quota.max_job_bytes`: the caller then writes the job as failed
        with that error and no result (JobManager.finish), which is never refused for quota: a job that was
        accepted always ends with a record saying how."""

    def claim_job(self, tenant: str, job_id: str, owner: str, ttl_s: int) -> JobRecord | None:
        """Make `owner` the job's runner and count the attempt (job_updates.claim); a finished job comes back
        unchanged, a missing one as None, a deleted incarnation's raises TenantGone."""

    def put_files(self, tenant: str, files: Mapping[str, bytes], ttl_s: int, epoch: str | None = None) -> None:
        """Store a request's generated images (file id -> PNG), all or none, under the tenant incarnation
        `epoch` (a job's), or the current one when None (a request answered now); TenantGone when that
        incarnation was deleted, QuotaExceeded when they would take it over `quota.max_files` or
        `quota.max_file_bytes`."""

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int, epoch: str | None = None) -> None:
        """`put_files` of one image."""

    def get_file(self, tenant: str, file_id: str) -> bytes | None:
        """The image, if the tenant's current incarnation stored it and it has not expired."""

    # -- rate limits, health ------------------------------------------------------------------------------
    def rate_hit(self, tenant: str, limit: int, window_s: int = 60, epoch: str = "") -> float:
        """Count one request in the window of that tenant incarnation; 0 when allowed, else the seconds until
        the window resets."""

    def ping(self) -> bool: ...

    def close(self) -> None: ...
