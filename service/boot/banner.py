"""What a person starting the service needs once it is ready: where the API, the playground and the API docs
are, where the admin key is, and the next command to run. On a terminal (`human_output`) as a few plain lines;
otherwise as fields of the JSON "ready" log line, for whoever reads the logs."""

from __future__ import annotations

import sys
from typing import Any

from service.core.logs import human_output
from service.core.settings import Settings
from service.tenants.admin_key import admin_key_path


def ready_fields(settings: Settings, backend: str, native: int) -> dict[str, Any]:
    base = settings.public_base_url().rstrip("/")
    fields: dict[str, Any] = {
        "model": settings.model_name,
        "backend": backend,
        "native_size": f"{native}x{native}",
        "api": f"{base}/v1",
        "playground": f"{base}/",
        "api_docs": f"{base}/docs",
    }
    if settings.admin_key is None and settings.redis_url is None:  # embedded mode generates it into a file
        fields["admin_key_file"] = str(admin_key_path(settings))
    return fields


def banner(fields: dict[str, Any], role: str) -> str:
    lines = [f"diffplex is ready: {fields['model']} on {fields['backend']}, native size {fields['native_size']}"]
    if role == "worker":  # no API here: it takes jobs from the Redis stream
        return "\n".join([*lines, "  jobs        taken from the Redis job stream (DIFFPLEX_REDIS_URL)"])
    lines += [
        f"  API         {fields['api']}  (OpenAI-compatible: POST /v1/images/generations)",
        f"  playground  {fields['playground']}",
        f"  API docs    {fields['api_docs']}",
    ]
    if "admin_key_file" in fields:
        lines.append(f"  admin key   {fields['admin_key_file']}")
    lines.append("  next        diffplex tenants create NAME   (prints the tenant's API key; the playground takes it)")
    return "\n".join(lines)


def announce_ready(settings: Settings, backend: str, native: int, log: Any) -> None:
    """The banner on a terminal, else one JSON log line with the same fields."""
    fields = ready_fields(settings, backend, native)
    if human_output(settings.log_format):
        print(banner(fields, settings.role), file=sys.stderr, flush=True)
    else:
        log.info("ready", extra=fields)
