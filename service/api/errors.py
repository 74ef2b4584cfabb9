"""FastAPI exception handlers: domain errors (mapped in `service.errors`), request validation, routing and
bugs all answer in OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import DOMAIN_ERRORS, ApiError, as_api_error

log = logging.getLogger(__name__)


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

    for cls in DOMAIN_ERRORS:  # handled inside the app: no traceback in the logs for a user's mistake
        app.add_exception_handler(cls, _domain)

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
