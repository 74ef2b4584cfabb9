"""`StreamWorker`: feeds the engine from the Redis job stream, up to its capacity, and acknowledges each job
once its final record is written.

Three loops on the event loop, every Redis call in a thread:
- read: XREADGROUP as many jobs as the engine has room for (images in flight < capacity);
- touch (every `jobs.heartbeat_s`): XCLAIM ... JUSTID on the entries it runs, so their idle time stays low;
- reclaim (every `jobs.recovery_every_s`): XAUTOCLAIM entries idle for `jobs.stale_after_s` (their worker died).

A job is claimed in its record (owner, attempts) before it runs; the JobManager heart-beats it and writes the
outcome once (stores/job_updates.py). A job whose tenant was deleted is acknowledged and dropped with a log
line, whether it was still in the stream (its record is gone) or running (the JobManager drops it). A job
that crashed its worker `worker.max_attempts` times is failed rather than handed on forever. `drain` stops
reading, hands back jobs taken but not started, and lets the running ones finish and be acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from service.core.error_handlers import STORE_OUTAGES
from service.core.settings import Settings
from service.engine import Engine, QueueFull
from service.jobs.manager import JobManager
from service.jobs.outcome import cancelled, error_body, log_dropped
from service.stores.base import JobRecord, TenantGone
from service.stores.job_stream import Delivery, JobStream

log = logging.getLogger(__name__)

FULL_WAIT_S = 0.05  # how often a full worker looks for room again
RETRY_S = 1.0  # after a Redis error in a loop


@dataclass
class _Taken:
    delivery: Delivery
    record: JobRecord


class StreamWorker:
    def __init__(self, jobs: JobManager, stream: JobStream, engine: Engine, settings: Settings) -> None:
        self.jobs = jobs
        self.stream = stream
        self.engine = engine
        self.settings = settings
        self.consumer = jobs.replica  # the stream consumer is the job owner: one name for both
        self.capacity = settings.worker.max_images or engine.config.max_active
        self.running: dict[str, asyncio.Task] = {}  # entry id -> task that runs the job, then acknowledges it
        self.waiting: list[_Taken] = []  # claimed, refused by a full engine queue: started when room frees
        self.draining = False
        self._loops: list[asyncio.Task] = []

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.stream.ensure_group()
        self._loops = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._touch_loop()),
            asyncio.create_task(self._reclaim_loop()),
        ]
        log.info("worker started", extra={"consumer": self.consumer, "capacity": self.capacity})

    async def drain(self, timeout: float) -> None:
        """Stop taking jobs, give back the ones not started, finish and acknowledge the running ones."""
        self.draining = True
        if self._loops:  # the reader ends after its current XREADGROUP
            await asyncio.wait({self._loops[0]}, timeout=self.settings.worker.block_ms / 1000 + 5)
        released, self.waiting = self.waiting, []
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.stream.release, [t.delivery for t in released])
        if self.running:
            await asyncio.wait(set(self.running.values()), timeout=timeout)
        for task in self._loops:
            task.cancel()
        log.info("worker drained", extra={"consumer": self.consumer, "unfinished": len(self.running)})

    @property
    def room(self) -> int:
        return self.capacity - self.engine.load

    # -- taking jobs --------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while not self.draining:
            try:
                await self._start_waiting()
                if self.waiting or self.room <= 0:
                    await asyncio.sleep(FULL_WAIT_S)
                    continue
                block_ms = self.settings.worker.block_ms
                taken = await asyncio.to_thread(self.stream.read, self.consumer, self.room, block_ms)
                if self.draining:  # the signal came while blocked in XREADGROUP: hand them on
                    await asyncio.to_thread(self.stream.release, taken)
                    return
                for delivery in taken:
                    await self._take(delivery)
            except Exception:
                log.exception("reading the job stream failed")
                await asyncio.sleep(RETRY_S)

    async def _reclaim_loop(self) -> None:
        timing = self.settings.jobs
        while not self.draining:
            await asyncio.sleep(timing.recovery_every_s)
            try:
                if self.draining or self.waiting or self.room <= 0:
                    continue
                taken = await asyncio.to_thread(self.stream.reclaim, self.consumer, timing.stale_after_s, self.room)
                for delivery in taken:
                    if delivery.entry_id in self.running or delivery.job_id in self.jobs.live:
                        continue  # our own entry, idle because this loop was busy: it runs already
                    log.info("reclaimed a job from a silent worker", extra={"job": delivery.job_id})
                    await self._take(delivery)
            except Exception:
                log.exception("reclaiming stale jobs failed")

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.jobs.heartbeat_s)
            held = [*self.running, *(t.delivery.entry_id for t in self.waiting)]
            try:
                await asyncio.to_thread(self.stream.touch, self.consumer, held)
            except Exception:
                log.exception("touching running jobs failed")

    async def _take(self, delivery: Delivery) -> None:
        """Claim the job's record, then run it, or settle it at once (finished, cancelled, expired, poison)."""
        ttl = self.settings.limits.job_ttl_s
        try:
            record = await asyncio.to_thread(
                self.jobs.store.claim_job, delivery.tenant, delivery.job_id, self.consumer, ttl
            )
        except TenantGone:  # a deleted tenant's (its name may exist again): never run
            record = None
            log_dropped(delivery.job_id, delivery.tenant)
        else:
            if record is None:  # deleting a tenant deletes its job records: its queued entries end here
                log.info(
                    "job dropped: its record is gone (expired, or its tenant was deleted)",
                    extra={"job": delivery.job_id, "tenant": delivery.tenant},
                )
        if record is None or record.terminal:  # gone, or finished by a run presumed dead
            await asyncio.to_thread(self.stream.ack, delivery.entry_id)
            return
        final = None
        if record.cancel_requested:
            final = cancelled(record)
        elif record.attempts > self.settings.worker.max_attempts:
            reason = f"the job stopped its worker {record.attempts - 1} times; it is not run again"
            final = record.model_copy(update={"status": "failed", "error": error_body(RuntimeError(reason))})
        if final is not None:
            if await self.jobs.finish(final):
                await asyncio.to_thread(self.stream.ack, delivery.entry_id)
            return
        await self._start(_Taken(delivery, record))

    async def _start(self, taken: _Taken) -> bool:
        """False when the engine queue is full or the store is out: the job waits, still claimed and touched, for
        room or for the store."""
        try:
            task = await self.jobs.start_stored(taken.record)
        except (QueueFull, *STORE_OUTAGES):
            self.waiting.append(taken)
            return False
        entry_id = taken.delivery.entry_id
        self.running[entry_id] = asyncio.create_task(self._acknowledge(entry_id, task))
        return True

    async def _start_waiting(self) -> None:
        while self.waiting and self.room > 0:
            taken = self.waiting.pop(0)
            if not await self._start(taken):
                self.waiting.insert(0, self.waiting.pop())  # keep the order; try again when room frees
                return

    async def _acknowledge(self, entry_id: str, task: asyncio.Task[bool] | None) -> None:
        """XACK once the job's record is final; a run that lost its job (reclaimed) leaves the entry alone."""
        try:
            settled = True if task is None else await task
            if settled:
                await asyncio.to_thread(self.stream.ack, entry_id)
        except Exception:
            log.exception("acknowledging a job failed", extra={"entry": entry_id})
        finally:
            self.running.pop(entry_id, None)
