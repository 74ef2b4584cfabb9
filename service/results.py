"""Engine results -> OpenAI `data` items: PNG as base64, or stored for `GET /v1/files/{id}.png` (url format).

Stored images count against the tenant's file quota (stores/usage.py). A url request is checked before its
images are made (`check_file_room`: they would be made for nothing), and its images are written all at once,
checked atomically with the write: if the quota filled while they were made (other requests of the tenant),
the request fails with QuotaExceeded (403) and none of its images is stored.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from service.engine import GenerationResult
from service.images import encode_png
from service.stores.base import Store, TenantUsage
from service.stores.usage import check_files


def check_file_room(
    store: Store, tenant: str, epoch: str | None, response_format: str, images: int, usage: TenantUsage | None = None
) -> None:
    """Blocking (a store read). QuotaExceeded when a request for `images` url images could not store them: the
    tenant's images are at the count cap, or would pass it, or fill the byte cap already. `usage`: read already
    by the caller."""
    if response_format != "url":
        return
    held = usage if usage is not None else store.usage(tenant, epoch)
    check_files(held, store.quota, images, 0, time.time())


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
    files belong to (a job's, or the one the request authenticated as); TenantGone once it was deleted,
    QuotaExceeded (nothing stored) when the images do not fit the tenant's file quota."""
    items, files = [], {}
    for result in results:
        png = encode_png(result.image)
        item: dict[str, Any] = {"seed": result.seed, "timings": {k: round(v, 4) for k, v in result.timings.items()}}
        if response_format == "url":
            file_id = f"img_{secrets.token_hex(12)}"
            files[file_id] = png
            item["url"] = f"{base_url.rstrip('/')}/v1/files/{file_id}.png"
        else:
            item["b64_json"] = base64.b64encode(png).decode()
        if revised_prompt is not None:
            item["revised_prompt"] = revised_prompt
        items.append(item)
    if files:
        store.put_files(tenant, files, ttl_s, epoch)
    return items
