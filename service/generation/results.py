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
from dataclasses import dataclass
from typing import Any

from service.engine import GenerationResult
from service.generation.images import encode_png
from service.stores.base import Store, TenantUsage
from service.stores.usage import check_files


@dataclass(frozen=True)
class Output:
    """Where one request's images go and in which form."""

    response_format: str  # "b64_json": in the answer; "url": stored as files, the answer links them
    tenant: str
    # The tenant incarnation the files belong to (a job's, or the one the request authenticated as): the store
    # refuses them (TenantGone) once it was deleted, even if a tenant of the same name exists again.
    epoch: str
    base_url: str  # the service's public address, the start of every image url
    ttl_s: int  # how long stored files are kept
    store: Store


def check_file_room(output: Output, images: int, usage: TenantUsage | None = None) -> None:
    """Blocking (a store read). QuotaExceeded when a request for `images` url images could not store them: the
    tenant's images are at the count cap, or would pass it, or fill the byte cap already. `usage`: read already
    by the caller."""
    if output.response_format != "url":
        return
    held = usage if usage is not None else output.store.usage(output.tenant, output.epoch)
    check_files(held, output.store.quota, images, 0, time.time())


def render(results: list[GenerationResult], revised_prompt: str | None, output: Output) -> list[dict[str, Any]]:
    """Blocking (PNG encoding, store writes): call it from a worker thread. TenantGone once the output's
    incarnation was deleted, QuotaExceeded (nothing stored) when the images do not fit the tenant's file quota."""
    items, files = [], {}
    for result in results:
        png = encode_png(result.image)
        item: dict[str, Any] = {"seed": result.seed, "timings": {k: round(v, 4) for k, v in result.timings.items()}}
        if output.response_format == "url":
            file_id = f"img_{secrets.token_hex(12)}"
            files[file_id] = png
            item["url"] = f"{output.base_url.rstrip('/')}/v1/files/{file_id}.png"
        else:
            item["b64_json"] = base64.b64encode(png).decode()
        if revised_prompt is not None:
            item["revised_prompt"] = revised_prompt
        items.append(item)
    if files:
        output.store.put_files(output.tenant, files, output.ttl_s, output.epoch)
    return items
