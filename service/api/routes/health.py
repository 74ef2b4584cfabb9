"""Probes, metrics, the model list and generated files."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import State, Tenant
from service.api.errors import respond
from service.api.responses import AUTHENTICATED, content, errors
from service.errors import ApiError, not_found

router = APIRouter()


@router.get("/livez", tags=["health"])
async def livez() -> dict[str, str]:
    """The process serves HTTP (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses=errors(503))
async def readyz(state: State) -> JSONResponse:
    """Model loaded and warmed, store reachable: send traffic."""
    store_ok = await asyncio.to_thread(state.store.ping)
    if state.model is None or state.stopping or not store_ok:
        reason = (
            "shutting down"
            if state.stopping
            else state.load_error or ("the store does not answer" if not store_ok else "the model is loading")
        )
        return respond(ApiError(503, reason, type="server_error", code="not_ready"))
    engine = state.model.engine
    if engine is None:  # role "api": validates and enqueues; the workers' /readyz report their engines
        return JSONResponse({"status": "ready", "role": "api", "backend": state.settings.backend})
    return JSONResponse({"status": "ready", "backend": engine.runtime.name, "load": engine.load})


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: content("text/plain", "Prometheus text format")},
)
async def metrics(state: State) -> Response:
    # Rendering walks every series (milliseconds, more with many routes): off the event loop, so probes and
    # other requests are not held behind a scrape.
    text = await asyncio.to_thread(state.metrics.render)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


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
