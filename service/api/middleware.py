"""The outermost layer of every request: a request id, what the request may send (service/api/body.py) and
what it must pass before its body is read (service/api/gate.py), latency metrics and an access log.

Pure ASGI (not BaseHTTPMiddleware), so streamed responses (SSE) pass through untouched, and so it runs on
the headers before anything has called `receive`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.body import BodyReader, declares_body, policy_for, refusal_from_headers
from service.api.gate import NOTHING_HELD, admit, gated
from service.api.state import ServiceState
from service.errors import ApiError, as_api_error
from service.logs import request_id_var, tenant_var
from service.metrics import Metrics, method_label
from service.settings import Settings

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

        async def refuse(error: ApiError, close: bool) -> None:
            body = json.dumps(error.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items() if k.lower() != "connection"]
            if close:  # the body is unread: stop the connection here rather than read and discard it
                headers.append((b"connection", b"close"))
            await send_with_id({"type": "http.response.start", "status": error.status, "headers": headers})
            await send_with_id({"type": "http.response.body", "body": body})
            self.metrics.http_refused.labels(str(error.status)).inc()

        release = NOTHING_HELD
        reader = BodyReader(receive, policy.limit, self.http)

        async def send_from_app(message: Message) -> None:
            # FastAPI turns a BodyRefused into its own error answer (or a 400 "error parsing the body" when
            # the parser wraps it): whatever it is, the client gets the refusal, and its connection closes.
            nonlocal replaced
            if reader.refusal is not None and not response_started:
                replaced = True
                await refuse(reader.refusal, close=True)
                return
            if not replaced:
                await send_with_id(message)

        try:
            refusal = refusal_from_headers(method, headers, policy)
            state: ServiceState | None = getattr(getattr(scope.get("app"), "state", None), "service", None)
            if refusal is None and state is not None and gated(path, policy):
                try:
                    release = await admit(state, path, headers, policy, scope_state)
                except Exception as error:  # noqa: BLE001 - only the refusals are answered here
                    refusal = as_api_error(error)
                    if refusal is None:
                        raise
            if refusal is not None:
                await refuse(refusal, close=declares_body(headers))
                return
            if policy.upload == "edit":  # an edit's slot is for receiving its image, not for generating
                reader = BodyReader(receive, policy.limit, self.http, on_complete=release)
            await self.app(scope, reader, send_from_app)
        except Exception:
            # The body's refusal, raised out of `receive` through the app (as is, or wrapped by a parser).
            if reader.refusal is None or response_started:
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
