"""Engine errors: each says what the caller can change; the API maps them to 4xx / 429 responses."""


class EngineError(ValueError):
    """A request the engine cannot run as given (bad size, sampler, strength...)."""


class QueueFull(RuntimeError):
    """The bounded queue is at capacity: retry later (HTTP 429/503 with Retry-After)."""


class Cancelled(RuntimeError):
    """The request was cancelled before it finished."""
