"""The probes and the metrics, served by `diffplex serve` and `diffplex worker` alike: `/livez` (the process
serves HTTP), `/readyz` (model loaded and warmed, store reachable, not draining) and `/metrics` (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.boot.state import State
from service.core.error_handlers import respond
from service.core.errors import ApiError
from service.core.responses import content, errors

router = APIRouter()


@router.get("/livez", tags=["health"], responses=errors(503))
async def livez(state: State) -> JSONResponse:
    """The process serves HTTP (the model may still be loading); 503 with the reason once the model failed to
    load (with DIFFPLEX_EXIT_ON_LOAD_ERROR=false): only a restart after a fix helps, so the orchestrator restarts it."""
    if state.load_error is not None:
        return respond(ApiError(503, state.load_error, type="server_error", code="model_load_failed"))
    return JSONResponse({"status": "ok"})


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
    answer = {"status": "ready", "backend": engine.runtime.name, "batching": engine.config.batching}
    return JSONResponse(answer | {"load": engine.load})


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
