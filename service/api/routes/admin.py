"""Tenant administration (admin key only): create (returns the tenant's API key, once), list, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import Admin, State
from service.api.schemas import TenantCreate, TenantCreated
from service.core.errors import not_found
from service.core.responses import errors
from service.tenants.names import check_tenant_name

# 401: no key or a malformed header; 403: a key that is not the admin key; 503: the store does not answer
router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Admin], responses=errors(400, 401, 403, 503))


@router.post("/tenants", status_code=201, response_model=TenantCreated, responses=errors(409, 413))
async def create_tenant(body: TenantCreate, state: State) -> JSONResponse:
    name = check_tenant_name(body.name)
    api_key = await asyncio.to_thread(state.store.create_tenant, name)
    return JSONResponse(TenantCreated(tenant=name, api_key=api_key).model_dump(), status_code=201)


@router.get("/tenants")
async def list_tenants(state: State) -> dict[str, Any]:
    tenants = await asyncio.to_thread(state.store.list_tenants)
    return {"object": "list", "data": [{"tenant": t.name, "created": int(t.created)} for t in tenants]}


@router.delete("/tenants/{name}", responses=errors(404))
async def delete_tenant(name: str, state: State) -> dict[str, Any]:
    """Revokes the tenant's keys and deletes its adapters, job records and generated files. Its jobs still
    queued or running are dropped by the workers without writing anything, and a tenant created again under
    this name is a new one (a new epoch, stores/base.py) that sees none of the deleted one's jobs or files."""
    if not await asyncio.to_thread(state.store.delete_tenant, name):
        raise not_found(f"tenant {name!r}")
    return {"tenant": name, "deleted": True}
