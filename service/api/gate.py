"""What a request with a body must pass on its headers alone, before anything reads the body: the API key
(the admin key on /v1/admin/), and for uploads the tenant's concurrent uploads, upload rate and adapter quota.

An anonymous caller, or a tenant over its limits, then costs a header read and a key lookup: its body (up to
65 MiB) is never received, parsed or spooled to a temporary file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from service.api.body import FORM_ROOM, BodyPolicy, declared_length
from service.api.deps import CALLER, check_admin, check_upload_rate, tenant_for
from service.boot.state import ServiceState
from service.core.logs import tenant_var
from service.stores.base import AdapterMeta, Quota, TenantRecord
from service.stores.quota import check_quota

ADMIN_PREFIX = "/v1/admin/"
API_PREFIX = "/v1/"
NOTHING_HELD: Callable[[], None] = lambda: None  # noqa: E731 - the release of a request that took no slot


def gated(path: str, policy: BodyPolicy) -> bool:
    """Every API route that takes a body (the probes, metrics and the playground take none)."""
    return policy.limit > 0 and path.startswith(API_PREFIX)


async def admit(
    state: ServiceState, path: str, headers: Mapping[str, str], policy: BodyPolicy, scope_state: dict
) -> Callable[[], None]:
    """Raises the ApiError that refuses the request; else records the caller in `scope_state` (the routes'
    `authenticated` dependency takes it from there) and returns the release of its upload slot."""
    authorization = headers.get("authorization", "")
    if path.startswith(ADMIN_PREFIX):
        check_admin(state, authorization)
        return NOTHING_HELD
    caller = await tenant_for(state, authorization)
    scope_state[CALLER] = caller
    tenant_var.set(caller.name)
    if policy.upload is None:
        return NOTHING_HELD
    release = state.uploads.take(caller.name)
    try:
        if policy.upload == "adapter":
            await check_upload_rate(state, caller)
            await _check_quota(state, caller, path.rsplit("/", 1)[1], declared_length(headers))
    except BaseException:
        release()
        raise
    return release


async def _check_quota(state: ServiceState, caller: TenantRecord, name: str, declared: int | None) -> None:
    """The early refusal, by the store's own rule: the adapter count, and the body's declared size less the
    form's room (the file is at least that large; nothing is known of a chunked body's size yet). The store
    checks the quota again, exactly, when it writes the file."""
    limits = state.settings.limits
    quota = Quota(max_count=limits.max_adapters_per_tenant, max_bytes=limits.max_adapter_bytes_per_tenant)
    adapters = await asyncio.to_thread(state.store.list_adapters, caller.name, caller.epoch)
    others = [m for m in adapters if m.name != name]  # a replacement frees the old file's bytes
    least = max(0, (declared or 0) - FORM_ROOM)
    check_quota(others, AdapterMeta(name=name, kind="lora", size=least, sha256=""), quota)
