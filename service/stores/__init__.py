"""Shared state behind one `Store` interface: `LocalStore` (a directory) and `RedisStore`."""

from service.stores.base import (
    AdapterMeta,
    Conflict,
    JobRecord,
    NotFound,
    Quota,
    QuotaExceeded,
    StorageQuota,
    Store,
    StoreError,
    TenantGone,
    TenantRecord,
    TenantUsage,
    WorkCapExceeded,
)
from service.stores.local import LocalStore
from service.stores.open import open_store
from service.stores.redis_store import RedisStore

__all__ = [
    "AdapterMeta",
    "Conflict",
    "JobRecord",
    "LocalStore",
    "NotFound",
    "Quota",
    "QuotaExceeded",
    "RedisStore",
    "StorageQuota",
    "Store",
    "StoreError",
    "TenantGone",
    "TenantRecord",
    "TenantUsage",
    "WorkCapExceeded",
    "open_store",
]
