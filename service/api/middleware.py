"""The outermost layer of every request: a request id, what the request may send (service/api/body.py) and
what it must pass before its body is read (service/api/gate.py), latency metrics and an access log.

Pure ASGI (not BaseHTTPMiddleware), so streamed responses (SSE) pass through untouched, and so it runs on
the headers before anything has called `receive`.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.body import BodyReader, declares_body, policy_for, refusal_from_headers
from service.api.gate import NOTHING_HELD, admit, gated
from service.boot.state import ServiceState
from service.core.logs import request_id_var, tenant_var
from service.core.metrics import Metrics, method_label
from service.core.settings import Settings

log = logging.getLogger("diffplex.access")
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def route_template(scope: Scope) -> str:
    """The route the request matched (its path template), else the one the app's router would match, else
    "unmatched": a closed set of label values whatever the path."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


async def error_response(scope: Scope, error: Exception) -> Response:
    """The app's own answer to `error` (its exception handlers: the OpenAI error shape, 503 for a store outage,
    500 for a bug), for an error raised here, outside the app, before the request reaches it."""
    handlers = getattr(scope.get("app"), "exception_handlers", {})
    handler = next((handlers[cls] for cls in type(error).__mro__ if cls in handlers), None)
    if handler is None:
        raise error
    response = handler(Request(scope), error)
    return await response if inspect.isawaitable(response) else response


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, settings: Settings) -> None:
        self.app = app
        self.metrics = metrics
        self.limits = settings.limits
        self.http = settings.http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_ID.fullmatch(given) else uuid.uuid4().hex
        request_id_var.set(request_id)
        tenant_var.set("")
        scope_state = scope.setdefault("state", {})
        scope_state["request_id"] = request_id
        method, path = scope["method"], scope["path"]
        policy = policy_for(method, path, self.limits)
        started = time.perf_counter()
        status = 500
        response_started = False
        replaced = False  # the app's answer was swapped for the body's refusal; its messages are dropped

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        async def refuse(error: Exception, close: bool) -> None:
            response = await error_response(scope, error)
            if close:  # the body is unread: end the connection rather than read and discard the rest
                response.headers["connection"] = "close"
            await response(scope, receive, send_with_id)
            self.metrics.http_refused.labels(str(response.status_code)).inc()

        release = NOTHING_HELD
        reader: BodyReader | None = None

        async def send_from_app(message: Message) -> None:
            # FastAPI turns a BodyRefused into its own error answer (or a 400 "error parsing the body" when
            # a parser wraps it): whatever it is, the client gets the refusal, and its connection closes.
            nonlocal replaced
            if reader is not None and reader.refusal is not None and not response_started:
                replaced = True
                await refuse(reader.refusal, close=True)
            elif not replaced:
                await send_with_id(message)

        try:
            refusal: Exception | None = refusal_from_headers(method, headers, policy)
            state: ServiceState | None = getattr(getattr(scope.get("app"), "state", None), "service", None)
            if refusal is None and state is not None and gated(path, policy):
                try:
                    release = await admit(state, path, headers, policy, scope_state)
                except Exception as error:  # noqa: BLE001 - answered by the app's handlers, as inside it
                    refusal = error
            if refusal is not None:
                await refuse(refusal, close=declares_body(headers))
                return
            # An edit's upload slot is for receiving its image, not for generating; an adapter's is held
            # while the file is parsed and stored too, where its bytes are still in memory.
            reader = BodyReader(receive, policy.limit, self.http, release if policy.upload == "edit" else None)
            await self.app(scope, reader, send_from_app)
        except Exception:
            # The body's refusal, raised out of `receive` through the app (as is, or wrapped by a parser).
            if reader is None or reader.refusal is None or response_started:
                if replaced:
                    return  # answered already: the app only re-raised it
                raise
            await refuse(reader.refusal, close=True)
        finally:
            release()
            elapsed = time.perf_counter() - started
            self.metrics.request_latency.labels(method_label(method), route_template(scope), str(status)).observe(
                elapsed
            )
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant": tenant_var.get() or None,
                },
            )
