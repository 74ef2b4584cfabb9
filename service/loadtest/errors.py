"""The load test's one failure type: a message a user can act on and the exit code it ends with."""

from __future__ import annotations


class LoadtestError(RuntimeError):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
