"""The server process's resident memory, sampled from outside (psutil), for the memory-bound checks."""

from __future__ import annotations

import threading

import psutil

MiB = 1 << 20


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MiB


class RssSampler:
    """Peak RSS of `pid` while a `with` block runs, sampled every `every_s` on a thread."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.start_mib = self.peak_mib = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mib = max(self.peak_mib, rss_mib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib(self.pid))
