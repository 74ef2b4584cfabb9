"""Every error leaves the service in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Domain exceptions (adapters, engine, stores, prompt and image parsing) are mapped here, in one table, so a
route never builds an error body itself and the same mistake reads the same everywhere (HTTP answers,
failed jobs, SSE `error` events).
"""

from __future__ import annotations

import math
from typing import Any

from adapters import AdapterError
from service.adapter_cache import AdapterGone
from service.engine import Cancelled, EngineError, QueueFull, TenantBusy
from service.generation import InvalidRequest
from service.images import ImageInputError
from service.names import InvalidName
from service.prompt import PromptError
from service.stores import Conflict, NotFound, QuotaExceeded

RETRY_AFTER_QUEUE_S = 2


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def retry_later(status: int, message: str, code: str, retry_s: float, type: str = "rate_limit_error") -> ApiError:  # noqa: A002
    """A refusal the caller may retry: `message` ends with the same whole seconds (at least 1) that
    `Retry-After` gives."""
    seconds = max(1, math.ceil(retry_s))
    headers = {"Retry-After": str(seconds)}
    return ApiError(status, f"{message}: retry in {seconds}s", type=type, code=code, headers=headers)


def not_found(what: str, param: str | None = None) -> ApiError:
    """The same answer for "missing" and "another tenant's": existence does not leak across tenants."""
    return ApiError(404, f"{what} not found", param=param, code="not_found")


def as_api_error(error: Exception) -> ApiError | None:
    """The API answer for a domain exception, or None for a bug (answered 500)."""
    match error:
        case ApiError():
            return error
        case InvalidRequest():
            return ApiError(error.status, str(error), param=error.param, code=error.code)
        case QueueFull():
            return ApiError(
                503,
                f"{error} (Retry-After: {RETRY_AFTER_QUEUE_S}s)",
                type="server_error",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_QUEUE_S)},
            )
        case TenantBusy():
            return retry_later(429, str(error), "tenant_busy", error.retry_after_s)
        case Cancelled():
            return ApiError(409, str(error), code="cancelled")
        case QuotaExceeded():
            return ApiError(403, str(error), type="insufficient_quota", code="quota_exceeded")
        case Conflict():
            return ApiError(409, str(error), code="conflict")
        case NotFound() | AdapterGone():
            return ApiError(404, str(error), code="not_found")
        case AdapterError():
            return ApiError(400, str(error), param="adapters", code="invalid_adapter")
        case EngineError() | PromptError() | ImageInputError() | InvalidName():
            return ApiError(400, str(error), code="invalid_value")
    return None


DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    InvalidRequest,
    QueueFull,
    TenantBusy,
    Cancelled,
    QuotaExceeded,
    Conflict,
    NotFound,
    AdapterGone,
    AdapterError,
    EngineError,
    PromptError,
    ImageInputError,
    InvalidName,
)
