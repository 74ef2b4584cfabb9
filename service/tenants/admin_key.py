"""The admin key: `DIFFPLEX_ADMIN_KEY`, or (embedded mode only) one generated into `<data_dir>/admin_key`.

With a shared (Redis) store every replica must hold the same key, so it has to be configured; a
single embedded server may make its own, readable only by its user (0600), and says where it is.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from adapters.errors import DiffplexError
from service.core.settings import Settings

log = logging.getLogger(__name__)
FILE_NAME = "admin_key"


class AdminKeyMissing(DiffplexError, RuntimeError):
    """No admin key configured where one is required (several replicas must share it): a setting to fix."""

    status, type, code = 500, "server_error", None


def admin_key_path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def resolve_admin_key(settings: Settings) -> str:
    if settings.admin_key is not None and settings.admin_key.get_secret_value():
        return settings.admin_key.get_secret_value()
    if settings.redis_url:
        raise AdminKeyMissing("set DIFFPLEX_ADMIN_KEY: every replica sharing the Redis store needs the same admin key")
    path = admin_key_path(settings)
    if path.exists():
        key = path.read_text().strip()
        if key:
            log.info("admin key read from file", extra={"admin_key_file": str(path.resolve())})
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = f"dpx_admin_{secrets.token_urlsafe(32)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    log.warning(
        "generated an admin key (set DIFFPLEX_ADMIN_KEY to choose one)",
        extra={"admin_key_file": str(path.resolve())},
    )
    return key
