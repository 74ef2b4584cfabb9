"""FastAPI exception handlers: domain errors (mapped in `service.core.errors`), request validation, routing, an
unreachable store and bugs all answer in OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import DiffplexError
from service.core.errors import ApiError, as_api_error

log = logging.getLogger(__name__)

STORE_RETRY_S = 5
# Redis down, restarting (still loading its data) or too slow: a passing outage, not a bug. Shared state
# lives there, so nothing can be answered; redis-py reconnects by itself on the next call after it returns.
STORE_OUTAGES: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def respond(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _readable(error: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
    param = ".".join(loc) or None
    message = error.get("msg", "invalid value")
    if error.get("type") == "extra_forbidden":
        message = "unknown field: check its spelling against the API reference"
    if error.get("type") == "model_attributes_type" and not loc:
        return "the request body must be a JSON object, sent with Content-Type: application/json", None
    if error.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {error.get('ctx', {}).get('error', message)}", None
    return (f"{param}: {message}" if param else message), param


def install_error_handlers(app: FastAPI) -> None:
    async def _domain(request: Request, error: Exception) -> JSONResponse:
        mapped = as_api_error(error)
        assert mapped is not None  # registered only for the mapped classes
        return respond(mapped)

    # handled inside the app: no traceback in the logs for a user's mistake
    app.add_exception_handler(DiffplexError, _domain)

    async def _store_down(request: Request, error: Exception) -> JSONResponse:
        log.warning("store unavailable", extra={"error": str(error)})
        message = "the service's store (Redis) does not answer: nothing was accepted, retry shortly"
        headers = {"Retry-After": str(STORE_RETRY_S)}
        return respond(ApiError(503, message, type="server_error", code="store_unavailable", headers=headers))

    for cls in STORE_OUTAGES:
        app.add_exception_handler(cls, _store_down)

    _document_400_not_422(app)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        messages, params = (
            zip(*(_readable(e) for e in errors), strict=True) if errors else (("invalid request",), (None,))
        )
        return respond(ApiError(400, "; ".join(messages), param=params[0], code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(error.status_code)
        message = str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}: see GET /docs for the API"
        return respond(ApiError(error.status_code, message, code=code, headers=getattr(error, "headers", None)))

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        mapped = as_api_error(error)
        if mapped is not None:
            return respond(mapped)
        log.exception("unhandled error")
        request_id = request.scope.get("state", {}).get("request_id", "")
        return respond(
            ApiError(500, f"internal error (request id {request_id}): please report it", type="server_error")
        )


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents a 422 on every route with parameters; `_validation` above answers those errors with
    400 (as OpenAI does), which the routes declare (`service.core.responses`). Drop the 422s nobody gets."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
