"""The engine's recent throughput, what a refused tenant's Retry-After is estimated from."""

from __future__ import annotations

from collections import deque


class WorkRate:
    """Images x steps per second of busy engine time over the last ticks. Idle time is not counted, so a quiet
    period does not make the estimate optimistic."""

    def __init__(self, ticks: int = 64) -> None:
        self._ticks: deque[tuple[int, float]] = deque(maxlen=ticks)  # (image-steps, seconds)

    def add(self, work: int, seconds: float) -> None:
        self._ticks.append((work, seconds))

    def per_s(self) -> float | None:
        """None before any busy time: there is nothing to estimate from."""
        seconds = sum(s for _, s in self._ticks)
        return sum(w for w, _ in self._ticks) / seconds if seconds > 0 else None
