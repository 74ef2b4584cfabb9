"""The outermost layer of every request: a request id, a body-size cap, latency metrics and an access log.

Pure ASGI (not BaseHTTPMiddleware), so streamed responses (SSE) pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id_var, tenant_var
from service.metrics import Metrics

log = logging.getLogger("diffplex.access")
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
UPLOAD_PATHS = ("/v1/adapters/", "/v1/images/edits")


class BodyTooLarge(StarletteHTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it as is (413) instead of a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes: send a smaller file or fewer images")


def _error_body(status: int, message: str, code: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": error}).encode()


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_ID.fullmatch(given) else uuid.uuid4().hex
        request_id_var.set(request_id)
        tenant_var.set("")
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope["path"]
        limit = self.max_upload_bytes + (1 << 20) if path.startswith(UPLOAD_PATHS) else self.max_body_bytes
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                raise BodyTooLarge(limit)
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge as error:
            if response_started:
                raise
            message = str(error.detail)
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _error_body(413, message, "too_large")})
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant": tenant_var.get() or None,
                },
            )
