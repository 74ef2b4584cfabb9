"""Dependencies: the app state, the tenant behind `Authorization: Bearer <key>`, the admin key, the model
(ready or 503) and the per-tenant rate limit.

`Caller` is the tenant *incarnation* the key opened (its name and epoch, stores/base.py): routes that write
jobs, files or adapters, read adapters or count the rate pass its epoch to the store, so a request
authenticated just before its tenant was deleted and created again under the same name touches nothing in
the new tenant's namespace (TenantGone: 404)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from service.boot.state import ModelParts, ServiceState, State
from service.core.errors import ApiError, retry_later
from service.core.logs import tenant_var
from service.stores.base import TenantRecord
from service.tenants import keys

LOADING_RETRY_S = 5


CALLER = "caller"  # scope["state"] key: the tenant the request middleware authenticated before the body


def bearer_token(header: str) -> str:
    """The key in an `Authorization: Bearer <key>` header value; 401 for a missing or malformed header."""
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "no API key: send it as 'Authorization: Bearer <key>' (an admin creates keys with POST /v1/admin/tenants)",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "the Authorization header must be 'Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def tenant_for(state: ServiceState, header: str) -> TenantRecord:
    """The tenant incarnation behind an Authorization header value, or 401. Shared by the dependency below and
    the request middleware, which checks the key of a request that carries a body before the body is read."""
    token = bearer_token(header)
    tenant = await asyncio.to_thread(state.store.authenticate, token)
    if tenant is None:
        raise ApiError(
            401,
            "invalid API key: check it, or ask an admin for a new one",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


def check_admin(state: ServiceState, header: str) -> None:
    """401 without a well-formed key, 403 for a key that is not the admin key."""
    if not keys.same_secret(bearer_token(header), state.admin_key):
        raise ApiError(403, "this route needs the admin key", type="permission_error", code="not_admin")


async def authenticated(request: Request, state: State) -> TenantRecord:
    """The caller: found by the request middleware already on routes with a body (the key is checked once),
    else looked up here."""
    tenant = request.scope.get("state", {}).get(CALLER)
    if not isinstance(tenant, TenantRecord):
        tenant = await tenant_for(state, request.headers.get("authorization", ""))
    tenant_var.set(tenant.name)
    return tenant


Caller = Annotated[TenantRecord, Depends(authenticated)]


async def current_tenant(caller: Caller) -> str:
    """The name alone, for routes that only read (FastAPI authenticates once per request for both)."""
    return caller.name


Tenant = Annotated[str, Depends(current_tenant)]


async def require_admin(request: Request, state: State) -> None:
    check_admin(state, request.headers.get("authorization", ""))


Admin = Depends(require_admin)


async def model_parts(state: State) -> ModelParts:
    if state.load_error is not None:  # no Retry-After: a retry fails the same way until the model is fixed
        raise ApiError(503, state.load_error, type="server_error", code="model_load_failed")
    if state.model is None or state.stopping:
        reason = state.load_error or ("the server is shutting down" if state.stopping else "the model is loading")
        raise ApiError(
            503,
            f"{reason}: retry shortly",
            type="server_error",
            code="not_ready",
            headers={"Retry-After": str(LOADING_RETRY_S)},
        )
    return state.model


Model = Annotated[ModelParts, Depends(model_parts)]


async def rate_limited(state: State, caller: Caller) -> None:
    """Generation routes only: a window per tenant incarnation per minute, shared by every replica via the
    store (a request of a deleted incarnation does not count against a new tenant of the same name)."""
    limit = state.settings.limits.rate_per_minute
    if limit <= 0:
        return
    retry = await asyncio.to_thread(state.store.rate_hit, caller.name, limit, 60, caller.epoch)
    if retry > 0:
        state.metrics.rate_limited.inc()
        raise retry_later(
            429, f"rate limit of {limit} generation requests per minute reached", "rate_limit_exceeded", retry
        )


RateLimited = Depends(rate_limited)


async def check_upload_rate(state: ServiceState, caller: TenantRecord) -> None:
    """Adapter uploads: their own window per tenant incarnation per minute, apart from the generation window.
    It is the store's rate window under the epoch slot `<epoch>:upload` (the tenant slot must stay a valid
    tenant name: the LocalStore keeps one file of windows per tenant), so replicas share it too."""
    limit = state.settings.limits.upload_rate_per_minute
    if limit <= 0:
        return
    retry = await asyncio.to_thread(state.store.rate_hit, caller.name, limit, 60, f"{caller.epoch}:upload")
    if retry > 0:
        state.metrics.rate_limited.inc()
        raise retry_later(
            429, f"rate limit of {limit} adapter uploads per minute reached", "upload_rate_exceeded", retry
        )
