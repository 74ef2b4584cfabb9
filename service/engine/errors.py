"""Engine errors: each says what the caller can change; the API maps them to 4xx / 429 responses."""


class EngineError(ValueError):
    """A request the engine cannot run as given (bad size, sampler, strength...)."""


class QueueFull(RuntimeError):
    """The bounded queue is at capacity: retry later (HTTP 429/503 with Retry-After)."""


class Cancelled(RuntimeError):
    """The request was cancelled before it finished."""


class TenantBusy(RuntimeError):
    """The tenant already has its share of work queued and running: retry after `retry_after_s` (HTTP 429).
    Other tenants are still admitted."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
