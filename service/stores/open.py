"""The store a deployment asked for: Redis when `DIFFPLEX_REDIS_URL` is set, else the embedded directory;
and with Redis, the job stream that API replicas and workers share."""

from __future__ import annotations

from service.core.settings import Settings
from service.stores.base import StorageQuota, Store
from service.stores.job_stream import JobStream
from service.stores.local import LocalStore
from service.stores.redis_store import RedisStore


def storage_quota(settings: Settings) -> StorageQuota:
    limits = settings.limits
    return StorageQuota(
        max_jobs=limits.max_jobs_per_tenant,
        max_job_bytes=limits.max_job_bytes_per_tenant,
        max_files=limits.max_files_per_tenant,
        max_file_bytes=limits.max_file_bytes_per_tenant,
    )


def open_store(settings: Settings) -> Store:
    """With the deployment's storage quotas: every job creation and file write is checked, whoever makes it."""
    if settings.redis_url:
        options = settings.redis_client
        if settings.role != "api":  # it runs a stream worker, whose XREADGROUP waits block_ms before any reply
            options = options.model_copy(update={"timeout_s": options.timeout_s + settings.worker.block_ms / 1000})
        return RedisStore(settings.redis_url, settings.redis_prefix, options, storage_quota(settings))
    return LocalStore(settings.data_dir, storage_quota(settings))


def open_stream(settings: Settings, store: Store) -> JobStream | None:
    """The job stream (its group created if missing) when the store is Redis; None in embedded mode."""
    if not isinstance(store, RedisStore):
        return None
    stream = JobStream(store, settings.worker.group)
    stream.ensure_group()
    return stream
