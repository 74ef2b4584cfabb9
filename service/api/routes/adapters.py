"""A tenant's adapters: upload (validated against the running backbone), list, read, delete.

An upload is visible to the very next request on every replica: generation reads the adapter metadata
from the store per request and the cache is keyed by the file's sha256.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse

from service.api.deps import Caller, Model, State
from service.core.errors import ApiError, not_found
from service.core.responses import AUTHENTICATED, MODEL, errors
from service.hotload.upload import inspect_upload
from service.stores.base import AdapterMeta, Quota
from service.tenants.names import check_adapter_name

router = APIRouter(tags=["adapters"])


def view(meta: AdapterMeta) -> dict[str, Any]:
    body = meta.model_dump(exclude={"token_override", "epoch"})  # epoch: internal, like the key ids
    body["object"] = "adapter"
    body["created"] = int(meta.created)
    return body


@router.put(
    "/v1/adapters/{name}",
    # 429: the tenant's upload rate or concurrent uploads (checked by the request middleware before the body)
    responses={201: {"description": "Created"}, 200: {"description": "Replaced"}, **errors(*MODEL, 403, 404, 409, 429)},
)
async def put_adapter(
    name: str,
    state: State,
    caller: Caller,
    model: Model,
    file: UploadFile = File(description="the adapter: .safetensors (LoRA, embedding, VPT) or a .pt embedding"),
    kind: str | None = Form(default=None, description="lora | textual_inversion (ti) | vpt: checked if given"),
    token: str | None = Form(default=None, description="textual inversion: the prompt token, e.g. <my-style>"),
) -> JSONResponse:
    """Create or replace `name` (201 created, 200 replaced). Use it in prompts as `<lora:name:0.8>`, in
    `adapters: [{"name", "weight"}]`, or (embeddings) by writing its token."""
    check_adapter_name(name)
    limits = state.settings.limits
    data = await file.read()
    if len(data) > limits.max_adapter_upload_bytes:
        raise ApiError(
            413,
            f"the file is larger than {limits.max_adapter_upload_bytes} bytes "
            "(the server's DIFFPLEX_LIMITS__MAX_ADAPTER_UPLOAD_BYTES)",
            param="file",
            code="too_large",
        )
    meta = await asyncio.to_thread(
        inspect_upload,
        data,
        name,
        kind,
        token,
        model.info.spec,
        model.limits,
        limits.max_adapter_upload_bytes,
        model.info.tokenizer_dir,
    )
    if meta.tokens:
        others = await asyncio.to_thread(state.store.list_adapters, caller.name, caller.epoch)
        for other in others:
            if other.name != name and (clash := sorted(set(other.tokens) & set(meta.tokens))):
                raise ApiError(
                    409,
                    f"token(s) {', '.join(clash)} are already defined by your embedding {other.name!r}: "
                    "rename the token (form field `token`) or delete that embedding",
                    param="token",
                    code="conflict",
                )
    quota = Quota(max_count=limits.max_adapters_per_tenant, max_bytes=limits.max_adapter_bytes_per_tenant)
    previous = await asyncio.to_thread(state.store.put_adapter, caller.name, meta, data, quota, caller.epoch)
    return JSONResponse(view(meta), status_code=200 if previous is not None else 201)


@router.get("/v1/adapters", responses=errors(*AUTHENTICATED))
async def list_adapters(state: State, caller: Caller) -> dict[str, Any]:
    metas = await asyncio.to_thread(state.store.list_adapters, caller.name, caller.epoch)
    return {"object": "list", "data": [view(m) for m in metas]}


@router.get("/v1/adapters/{name}", responses=errors(*AUTHENTICATED, 404))
async def get_adapter(name: str, state: State, caller: Caller) -> dict[str, Any]:
    meta = await asyncio.to_thread(state.store.get_adapter, caller.name, name, caller.epoch)
    if meta is None:
        raise not_found(f"adapter {name!r}")
    return view(meta)


@router.delete("/v1/adapters/{name}", responses=errors(*AUTHENTICATED, 404))
async def delete_adapter(name: str, state: State, caller: Caller) -> dict[str, Any]:
    if not await asyncio.to_thread(state.store.delete_adapter, caller.name, name, caller.epoch):
        raise not_found(f"adapter {name!r}")
    return {"object": "adapter", "name": name, "deleted": True}
