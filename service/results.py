"""Engine results -> OpenAI `data` items: PNG as base64, or stored for `GET /v1/files/{id}.png` (url format)."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from service.engine import GenerationResult
from service.images import encode_png
from service.stores.base import Store


def render(
    results: list[GenerationResult],
    revised_prompt: str | None,
    response_format: str,
    tenant: str,
    store: Store,
    base_url: str,
    ttl_s: int,
    epoch: str,
) -> list[dict[str, Any]]:
    """Blocking (PNG encoding, store writes): call it from a worker thread. `epoch`: the tenant incarnation the
    files belong to (a job's, or the one the request authenticated as); TenantGone once it was deleted."""
    items = []
    for result in results:
        png = encode_png(result.image)
        item: dict[str, Any] = {"seed": result.seed, "timings": {k: round(v, 4) for k, v in result.timings.items()}}
        if response_format == "url":
            file_id = f"img_{secrets.token_hex(12)}"
            store.put_file(tenant, file_id, png, ttl_s, epoch)
            item["url"] = f"{base_url.rstrip('/')}/v1/files/{file_id}.png"
        else:
            item["b64_json"] = base64.b64encode(png).decode()
        if revised_prompt is not None:
            item["revised_prompt"] = revised_prompt
        items.append(item)
    return items
