"""The store a deployment asked for: Redis when `DIFFPLEX_REDIS_URL` is set, else the embedded directory."""

from __future__ import annotations

from service.settings import Settings
from service.stores.base import Store
from service.stores.local import LocalStore
from service.stores.redis_store import RedisStore


def open_store(settings: Settings) -> Store:
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.redis_prefix)
    return LocalStore(settings.data_dir)
