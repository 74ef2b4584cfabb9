"""The project's error base, and the one exception the adapters package raises.

`DiffplexError` lives here, in the lowest layer whose errors reach users, so that every package above
(export, service) can subclass it: each error class says, once, what HTTP answer it is (status, type, code,
param, and a `Retry-After` where waiting helps), and the service maps every one of them with one handler
(service/core/errors.py) instead of a table of domain modules.
"""

from __future__ import annotations


class DiffplexError(Exception):
    """Something a user (a request, a tenant's file, a setting) got wrong, or a state to wait out; the message
    says what to change. Class attributes give the HTTP answer; an instance may override each one."""

    status: int = 400
    type: str = "invalid_request_error"  # OpenAI's error types
    code: str | None = "invalid_value"
    param: str | None = None  # the request field at fault
    retry_after_s: float | None = None  # set: answered with Retry-After, and the message says when

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        for name, value in (
            ("status", status),
            ("type", type),
            ("code", code),
            ("param", param),
            ("retry_after_s", retry_after_s),
        ):
            if value is not None:
                setattr(self, name, value)


class AdapterError(DiffplexError, ValueError):
    """An adapter file, adapter set or backbone spec that cannot be used, with a message saying what to change."""

    code = "invalid_adapter"
    param = "adapters"


def listing(items: list[str], n: int = 8) -> str:
    """The first `n` items, comma-separated, and how many more: for naming offending keys in a message."""
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")
