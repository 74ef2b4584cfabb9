"""Engine errors: each says what the caller can change, and (DiffplexError) which HTTP answer it is."""

from adapters.errors import DiffplexError

RETRY_AFTER_QUEUE_S = 2.0  # a full queue drains in about this long at the small sizes a queue bound is set for


class EngineError(DiffplexError, ValueError):
    """A request the engine cannot run as given (bad size, sampler, strength...)."""


class QueueFull(DiffplexError, RuntimeError):
    """The bounded queue is at capacity: retry later."""

    status, type, code, retry_after_s = 503, "server_error", "queue_full", RETRY_AFTER_QUEUE_S


class Cancelled(DiffplexError, RuntimeError):
    """The request was cancelled before it finished."""

    status, code = 409, "cancelled"


class TenantBusy(DiffplexError, RuntimeError):
    """The tenant already has its share of work queued and running: retry after `retry_after_s`. Other tenants
    are still admitted."""

    status, type, code = 429, "rate_limit_error", "tenant_busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
