"""The answers each route declares in the OpenAPI schema besides its success: every error a client can get
has the same body (`ErrorBody`), and the schema lists exactly the statuses a route answers (the API fuzz
test holds the running service to this)."""

from __future__ import annotations

from typing import Any

from service.core.errors import ErrorBody

WHY = {
    400: "Invalid request: the message says which field and what to change",
    401: "No API key, a malformed one, or one that is not (or no longer) valid",
    403: "Not allowed: an admin route, or over the tenant's adapter quota",
    404: "Not found (another tenant's resource answers exactly like a missing one), or no such route",
    408: "The request body did not arrive in time (whole, or without long pauses): send it again",
    409: "Conflict with the current state (an existing name or token, a cancelled request)",
    413: "The body or file is larger than the configured limit",
    429: "Rate limit reached: retry after `Retry-After` seconds",
    503: "Not ready, queue full or the store does not answer: retry after `Retry-After` seconds",
}

# any route behind a tenant key: a bad header, a bad key, the store down, a body where none belongs (413)
AUTHENTICATED = (400, 401, 413, 503)
MODEL = (*AUTHENTICATED, 408)  # routes that need the loaded model and may take a body (408: it came too slowly)
GENERATION = (*MODEL, 404, 409, 429)  # 404: an unknown adapter or model name; 409: cancelled underway


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the shared error body."""
    return {status: {"model": ErrorBody, "description": WHY[status]} for status in sorted(set(statuses))}


def content(media_type: str, description: str) -> dict[str, Any]:
    """A success response that is not JSON (PNG files, server-sent events, Prometheus text)."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}
