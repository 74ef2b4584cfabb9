"""The model list and generated files (`response_format: "url"`), to their tenant."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import State, Tenant
from service.core.errors import not_found
from service.core.responses import AUTHENTICATED, content, errors

router = APIRouter()


@router.get("/v1/models", tags=["models"], responses=errors(*AUTHENTICATED))
async def models(state: State, tenant: Tenant) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": state.settings.model_name, "object": "model", "created": 0, "owned_by": "diffplex"}],
    }


@router.get(
    "/v1/files/{file_id}.png",
    tags=["images"],
    response_class=Response,
    responses={200: content("image/png", "The PNG image"), **errors(*AUTHENTICATED, 404)},
)
async def file(file_id: str, state: State, tenant: Tenant) -> Response:
    """A generated image (response_format "url"), visible to its tenant until the job TTL ends."""
    data = await asyncio.to_thread(state.store.get_file, tenant, file_id)
    if data is None:
        raise not_found(f"file {file_id!r}")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
