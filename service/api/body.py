"""What body a request may send, and the receive channel that holds it to that: a size cap per route, a
deadline for the whole body and a longest pause between its chunks.

Sizes: the two multipart routes (an adapter file, an edit's image) get the upload cap plus room for the
form; every other POST / PUT / PATCH (generations, jobs, admin) gets the JSON cap, a few kilobytes being all
they need; other methods take no body at all. A body on GET, DELETE, HEAD or OPTIONS is refused with 413
from its headers, unread, rather than ignored: ignoring it still means reading and discarding it off the
connection (uvicorn does, to reach the next request), which lets a client stream for free on a route that
needs no authentication, and no client of this API sends one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from service.core.errors import ApiError
from service.core.settings import HttpSettings, Limits

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
FORM_ROOM = 1 << 20  # an upload's multipart form around its file: boundaries, part headers, small fields
ADAPTER_UPLOAD = re.compile(r"/v1/adapters/[^/]+")
EDITS = "/v1/images/edits"


@dataclass(frozen=True)
class BodyPolicy:
    limit: int  # bytes; 0: no body
    upload: str | None = None  # "adapter" (PUT /v1/adapters/{name}) or "edit" (POST /v1/images/edits)


def policy_for(method: str, path: str, limits: Limits) -> BodyPolicy:
    if method not in BODY_METHODS:
        return BodyPolicy(0)
    if method == "PUT" and ADAPTER_UPLOAD.fullmatch(path):
        return BodyPolicy(limits.max_adapter_upload_bytes + FORM_ROOM, "adapter")
    if method == "POST" and path == EDITS:
        return BodyPolicy(limits.max_upload_bytes + FORM_ROOM, "edit")
    return BodyPolicy(limits.max_body_bytes)


def declared_length(headers: Mapping[str, str]) -> int | None:
    """Content-Length, or None without one (a chunked body: counted as it arrives). uvicorn (h11) has already
    answered 400 to a malformed one."""
    value = headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def declares_body(headers: Mapping[str, str]) -> bool:
    return (declared_length(headers) or 0) > 0 or "transfer-encoding" in headers


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than {limit} bytes: send a smaller file or fewer images",
        code="too_large",
    )


def unexpected_body(method: str) -> ApiError:
    return ApiError(413, f"{method} requests take no body: send it without one", code="unexpected_body")


def refusal_from_headers(method: str, headers: Mapping[str, str], policy: BodyPolicy) -> ApiError | None:
    """What the headers alone say about the body: none allowed, or declared larger than the cap."""
    if policy.limit == 0:
        return unexpected_body(method) if declares_body(headers) else None
    declared = declared_length(headers)
    return too_large(policy.limit) if declared is not None and declared > policy.limit else None


class BodyRefused(StarletteHTTPException):
    """Raised out of `receive`. An HTTPException, so FastAPI's body parsing re-raises it as is (not as a
    generic 400); the request middleware answers with `error` whatever the app makes of it."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.message, headers=error.headers)
        self.error = error


class BodyReader:
    """`receive` for the app, holding the body to `limit` bytes, to `whole_s` seconds from the request's
    admission (head read, key checked) and to `idle_s` seconds of silence between chunks. The first breach is
    kept in `refusal` and raised as BodyRefused. Once the body is complete it passes messages through
    untouched: the app keeps waiting on `receive` for the client's disconnect, for as long as a generation or
    an event stream lasts."""

    def __init__(
        self, receive: Receive, limit: int, http: HttpSettings, on_complete: Callable[[], None] | None = None
    ) -> None:
        self._receive = receive
        self.limit = limit
        self.idle_s = http.body_idle_timeout_s
        self.whole_s = http.body_timeout_s
        self._deadline = asyncio.get_running_loop().time() + self.whole_s
        self._on_complete = on_complete
        self.received = 0
        self.complete = limit == 0  # nothing to time on a route without a body
        self.refusal: ApiError | None = None

    def _refuse(self, error: ApiError) -> BodyRefused:
        self.refusal = error
        return BodyRefused(error)

    async def __call__(self) -> Message:
        if self.refusal is not None:
            raise BodyRefused(self.refusal)
        if self.complete:
            return await self._receive()
        left = self._deadline - asyncio.get_running_loop().time()
        wait = min(self.idle_s, left)
        if wait <= 0:
            raise self._refuse(self._timed_out(whole=True))
        try:
            message = await asyncio.wait_for(self._receive(), wait)
        except TimeoutError:
            raise self._refuse(self._timed_out(whole=wait >= left)) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise self._refuse(too_large(self.limit))
            if not message.get("more_body", False):
                self._completed()
        else:  # http.disconnect: nothing more will come
            self._completed()
        return message

    def _completed(self) -> None:
        self.complete = True
        if self._on_complete is not None:
            self._on_complete()

    def _timed_out(self, whole: bool) -> ApiError:
        why = (
            f"the request body did not arrive within {self.whole_s:g}s"
            if whole
            else f"the request body stalled for {self.idle_s:g}s"
        )
        return ApiError(
            408,
            f"{why} ({self.received} bytes received): send it at once, on a faster link",
            code="timeout",
            headers={"Connection": "close"},
        )
