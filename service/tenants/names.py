"""Names users choose (tenants, adapters): checked once, here, so they are safe as file names, Redis keys and
`<lora:name:weight>` tags everywhere else."""

from __future__ import annotations

import re

from adapters.errors import DiffplexError

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class InvalidName(DiffplexError, ValueError):
    """A tenant or adapter name outside the allowed alphabet; the message says which one is allowed."""


def check_tenant_name(name: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise InvalidName(
            f"tenant name {name!r} is not allowed: use 1 to 63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_adapter_name(name: str) -> str:
    if not ADAPTER_NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"adapter name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit (no '..')"
        )
    return name
