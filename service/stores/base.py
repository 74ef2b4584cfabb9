"""The shared state every replica sees, behind one interface: tenants and their hashed API keys, adapter
metadata and blobs per tenant namespace, job records and generated files with a TTL, per-tenant rate
windows and an "adapter changed" notification.

Two implementations: `LocalStore` (a directory; the embedded default) and `RedisStore`. Every method that
takes a tenant only ever touches that tenant's namespace, so scoping is enforced here and not in each
route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ChangeCallback = Callable[[str, str], None]  # (tenant, adapter name)


class StoreError(Exception):
    """Base of the errors a store raises for a request it cannot honour."""


class Conflict(StoreError):
    """The thing to create exists already."""


class NotFound(StoreError):
    """The tenant (or adapter) the write is for does not exist."""


class QuotaExceeded(StoreError):
    """A tenant's adapter count or bytes would go over its quota; the message says which and by how much."""


class Quota(BaseModel):
    max_count: int
    max_bytes: int


class TenantRecord(BaseModel):
    name: str
    created: float = Field(default_factory=time.time)


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


class JobRecord(BaseModel):
    id: str
    tenant: str
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
    # -- tenants and keys ---------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> str:
        """Create `name` and return its first API key (the only time it is visible); Conflict if it exists."""

    def delete_tenant(self, name: str) -> bool:
        """Delete the tenant, its keys and adapters (with change notifications); False if it did not exist."""

    def list_tenants(self) -> list[TenantRecord]: ...

    def authenticate(self, api_key: str) -> str | None:
        """The tenant owning `api_key`, or None."""

    # -- adapters -----------------------------------------------------------------------------------------
    def put_adapter(self, tenant: str, meta: AdapterMeta, blob: bytes, quota: Quota) -> AdapterMeta | None:
        """Create or replace atomically (quota checked against the tenant's other adapters); returns the
        replaced metadata. NotFound if the tenant is gone, QuotaExceeded over quota."""

    def get_adapter(self, tenant: str, name: str) -> AdapterMeta | None: ...

    def list_adapters(self, tenant: str) -> list[AdapterMeta]: ...

    def adapter_blob(self, tenant: str, name: str, sha256: str) -> bytes | None:
        """The blob of that exact version; None once it was replaced or deleted."""

    def delete_adapter(self, tenant: str, name: str) -> bool: ...

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(tenant, name)` whenever an adapter is written or deleted (on any replica);
        returns the function that unsubscribes."""

    # -- jobs and files -----------------------------------------------------------------------------------
    def put_job(self, job: JobRecord, ttl_s: int) -> None: ...

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        """None for a missing job and for another tenant's (the API answers both with the same 404)."""

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord | None: ...

    def claim_stale_jobs(self, owner: str, stale_after_s: float, ttl_s: int) -> list[JobRecord]:
        """Take over unfinished jobs whose owner stopped heart-beating (crashed replica): each is claimed
        by exactly one caller, which runs it again."""

    def save_progress(self, job: JobRecord, ttl_s: int) -> JobRecord:
        """A runner's heartbeat, written only while it owns the unfinished job (job_updates.progress); returns
        the stored record, whose `cancel_requested`, `status` and `owner` tell the runner whether to go on."""

    def complete_job(self, job: JobRecord, ttl_s: int) -> bool:
        """The final write, at most once per job (job_updates.completion); False when refused."""

    def claim_job(self, tenant: str, job_id: str, owner: str, ttl_s: int) -> JobRecord | None:
        """Make `owner` the job's runner and count the attempt (job_updates.claim); a finished job comes back
        unchanged, a missing one as None."""

    def put_file(self, tenant: str, file_id: str, data: bytes, ttl_s: int) -> None: ...

    def get_file(self, tenant: str, file_id: str) -> bytes | None: ...

    # -- rate limits, health ------------------------------------------------------------------------------
    def rate_hit(self, tenant: str, limit: int, window_s: int = 60) -> float:
        """Count one request; 0 when allowed, else the seconds until the window resets."""

    def ping(self) -> bool: ...

    def close(self) -> None: ...
