"""Every error leaves the service in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every error a user can act on subclasses `DiffplexError` (adapters/errors.py), which carries its HTTP answer,
so one mapping here serves every package, with no list of domain modules: a route never builds an error body
itself, and the same mistake reads the same everywhere (HTTP answers, failed jobs, SSE `error` events).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from adapters.errors import DiffplexError


class ApiError(DiffplexError):
    """An answer the HTTP layer itself decides (no key, not ready, rate limited...), with its headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, type=type, param=param)
        self.code = code  # None is a valid code here (no code), unlike in DiffplexError's keywords
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def retry_later(status: int, message: str, code: str, retry_s: float, type: str = "rate_limit_error") -> ApiError:
    """A refusal the caller may retry: `message` ends with the same whole seconds (at least 1) that
    `Retry-After` gives."""
    seconds = max(1, math.ceil(retry_s))
    headers = {"Retry-After": str(seconds)}
    return ApiError(status, f"{message}: retry in {seconds}s", type=type, code=code, headers=headers)


def not_found(what: str, param: str | None = None) -> ApiError:
    """The same answer for "missing" and "another tenant's": existence does not leak across tenants."""
    return ApiError(404, f"{what} not found", param=param, code="not_found")


def as_api_error(error: BaseException) -> ApiError | None:
    """The API answer for a project error, or None for a bug (answered 500)."""
    if isinstance(error, ApiError):
        return error
    if not isinstance(error, DiffplexError):
        return None
    if error.retry_after_s is not None:
        return retry_later(error.status, str(error), error.code or "", error.retry_after_s, error.type)
    return ApiError(error.status, str(error), error.type, error.param, error.code)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail
