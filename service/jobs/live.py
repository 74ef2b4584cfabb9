"""`LiveJob`: a job this replica runs, its record kept current (from the engine thread, via the event loop)
for its heartbeats and for readers (GET, events) that want progress fresher than the store's."""

from __future__ import annotations

import asyncio
import contextlib
import time

from service.generation.generate import Generation
from service.stores.base import JobRecord


class LiveJob:
    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.generation: Generation | None = None  # its images on the engine, once submitted
        self.lost = False  # another runner owns or finished the job: this run ends without writing
        self.orphaned = False  # its tenant was deleted: this run ends without writing
        self.dirty = True
        self.version = 0
        self.lock = asyncio.Lock()  # one write at a time: a heartbeat never lands after the final state
        self._changed = asyncio.Event()

    def cancel(self) -> None:
        """Free its engine rows (cancelled, or no longer this replica's to run): its run then ends."""
        if self.generation is not None:
            self.generation.cancel()

    def touch(self) -> None:
        self.record.updated = time.time()
        self.dirty = True
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()  # one Event per change: every waiter wakes once

    def progress(self, step: int, total: int) -> None:
        if self.record.terminal:
            return
        self.record.status, self.record.step, self.record.total = "running", step, total
        self.touch()

    def snapshot(self) -> tuple[int, JobRecord]:
        return self.version, self.record.model_copy()

    async def wait_past(self, version: int, timeout: float) -> bool:
        """Until the job changed after `version` (at once if it already has); False on timeout."""
        if self.version != version:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        return False
