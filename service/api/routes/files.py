"""The model list and generated files (`response_format: "url"`), to their tenant."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import State, Tenant
from service.core.errors import not_found
from service.core.responses import AUTHENTICATED, content, errors
from service.engine.request import max_side
from service.generation.warnings import trained_words

router = APIRouter()


@router.get("/v1/models", tags=["models"], responses=errors(*AUTHENTICATED))
async def models(state: State, tenant: Tenant) -> dict[str, Any]:
    """The model this server runs; once it is loaded, also its native image size, the sizes it accepts and, for a
    model that lists them (the embedded one does), the words it was trained on: other words draw nothing reliable."""
    model: dict[str, Any] = {"id": state.settings.model_name, "object": "model", "created": 0, "owned_by": "diffplex"}
    if state.model is not None:
        info = state.model.info
        model["native_size"] = f"{info.image_size}x{info.image_size}"
        model["size_multiple"] = info.size_multiple
        model["max_side"] = max_side(info.image_size)
        if (words := trained_words(info.tokenizer_dir)) is not None:
            model["vocabulary"] = sorted(words)
    return {"object": "list", "data": [model]}


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
