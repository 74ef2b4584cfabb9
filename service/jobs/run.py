"""Running jobs on this replica's engine: a job's generation submitted, awaited, and its outcome written once.

A job is run in two ways: right after it was accepted here (embedded mode: `submit`, then `follow` once its
record is stored), or from its stored record (`start_stored`: a job taken from the job stream by a worker, or
one claimed from a replica that stopped heart-beating). `live` holds the jobs running here; their progress is
written by the heartbeats (heartbeat.py).

A cancel frees the job's engine rows at the engine's next tick: at once when the `DELETE` reaches this replica
(records.py), else when the store's notification does (`cancel_heard`, within milliseconds with Redis), or at
the latest at the job's next heartbeat. A notification for a job that is not running here yet (claimed, still
being planned or waiting for engine room) is remembered, so it never starts.

A job carries its tenant's epoch (stores/base.py): once the tenant is deleted, its store writes raise TenantGone
and the run is dropped (its engine rows cancelled, its images and record never written), even if a tenant of
the same name exists again by then. Its outcome is shown (GET, events) only once stored, so nobody is shown
images its record does not keep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from service.core.error_handlers import STORE_OUTAGES
from service.engine import Cancelled, QueueFull
from service.generation.generate import ImageRequest, Planner, submit
from service.generation.plan import Plan
from service.generation.results import Output
from service.generation.runner import Runner
from service.jobs.live import LiveJob
from service.jobs.outcome import cancelled, error_body, finish, log_dropped
from service.jobs.stored import request_of
from service.stores.base import JobRecord, Store, TenantGone

log = logging.getLogger(__name__)

# Cancels heard for jobs that do not run here (most run on other replicas): the most recent are kept, for a
# job this replica claimed and has not started yet. Older ones only cost that job its first heartbeat's run.
MAX_CANCEL_NOTICES = 1024


class JobRunner:
    def __init__(
        self, store: Store, runner: Runner | None, planner: Planner, ttl_s: int, replica: str, max_image_side: int
    ) -> None:
        self.store = store
        self.runner = runner  # None: this replica runs no model (role "api"), every job goes to the workers
        self.planner = planner
        self.ttl_s = ttl_s
        self.replica = replica
        self.max_image_side = max_image_side  # a stored job's source image is refused from its header beyond it
        self.live: dict[str, LiveJob] = {}
        self.tasks: dict[str, asyncio.Task[bool]] = {}  # job id -> its run on this replica, until it ends
        self.cancel_notices: OrderedDict[str, None] = OrderedDict()  # job ids; see MAX_CANCEL_NOTICES

    def submit(self, record: JobRecord, plan: Plan, output: Output, capped: bool = True) -> LiveJob:
        """Put the job's images on the engine, its progress reported on `record`; QueueFull or TenantBusy
        refuse it before anything is queued. `capped=False`: a stored job, accepted already, is queued even
        over its tenant's work cap."""
        if self.runner is None:
            raise RuntimeError("this replica runs no model (role api): jobs go to the workers through the stream")
        live = LiveJob(record)
        loop = asyncio.get_running_loop()

        def progress(step: int, total: int) -> None:  # from the engine thread
            loop.call_soon_threadsafe(live.progress, step, total)

        live.generation = submit(self.runner, plan, output, progress, capped)
        self.live[record.id] = live
        return live

    def cancel_here(self, live: LiveJob) -> None:
        """Its rows leave the engine at the next tick; the run then ends cancelled (`_run`)."""
        if not live.record.cancel_requested:  # the step it was at: the final record's is at most a tick later
            log.info("cancelling job", extra={"job": live.record.id, "step": live.record.step})
        live.record.cancel_requested = True
        live.cancel()
        live.touch()  # readers (GET, events) see it cancelling

    def cancel_heard(self, job_id: str) -> None:
        """The store says a cancel was recorded for `job_id` (on any replica): stop it if it runs here, else
        remember it in case it is about to (`start_stored`)."""
        live = self.live.get(job_id)
        if live is not None:
            self.cancel_here(live)
            return
        self.cancel_notices[job_id] = None
        self.cancel_notices.move_to_end(job_id)
        while len(self.cancel_notices) > MAX_CANCEL_NOTICES:
            self.cancel_notices.popitem(last=False)

    def _cancel_heard_for(self, record: JobRecord) -> bool:
        if record.id in self.cancel_notices:
            del self.cancel_notices[record.id]
            record.cancel_requested = True
        return record.cancel_requested

    def withdraw(self, live: LiveJob) -> None:
        """A submitted job that was not accepted after all (its record could not be stored): its rows freed."""
        live.cancel()
        self.live.pop(live.record.id, None)

    def follow(self, live: LiveJob) -> asyncio.Task[bool]:
        """Run the submitted job to its end in the background; the task says whether its record ended final."""
        job_id = live.record.id
        task = asyncio.create_task(self._run(live))
        self.tasks[job_id] = task

        def ended(done: asyncio.Task[bool]) -> None:
            if self.tasks.get(job_id) is done:
                del self.tasks[job_id]

        task.add_done_callback(ended)
        return task

    async def start_stored(self, record: JobRecord) -> asyncio.Task[bool] | None:
        """Start a stored job this replica now owns (claimed). Its task says whether the record ended final;
        None when it ended at once (it could not be planned any more, e.g. its adapter was deleted).
        QueueFull: nothing was started, the caller tries again later."""
        previous_step = record.step
        record.status, record.step = "queued", 0
        if self._cancel_heard_for(record):  # cancelled before it ran (here, or on the replica that crashed)
            log.info("stored job was cancelled before it started", extra={"job": record.id})
            await finish(self.store, cancelled(record), self.ttl_s, self.replica)
            return None
        log.info("starting stored job", extra={"job": record.id, "previous_step": previous_step})
        try:
            request, plan = await asyncio.to_thread(self._plan_stored, record)
            # refusing it over its tenant's work cap now would fail a job the client was told is accepted
            live = self.submit(record, plan, request.output(self.store, self.ttl_s), capped=False)
        except (QueueFull, *STORE_OUTAGES):
            # not a failure of the job: the engine is full, or the store its plan reads (adapters) is out; the
            # caller retries (a job that failed here would be lost to an outage it was accepted before)
            raise
        except Exception as error:  # noqa: BLE001 - e.g. its adapter was deleted meanwhile
            record.status, record.error = "failed", error_body(error)
            await finish(self.store, record, self.ttl_s, self.replica)
            return None
        if self._cancel_heard_for(record):  # heard while it was being planned: its rows leave at the next tick
            self.cancel_here(live)
        return self.follow(live)

    def _plan_stored(self, record: JobRecord) -> tuple[ImageRequest, Plan]:
        """Blocking: the plan of a stored job, as its request was accepted (seeds resolved, image included)."""
        request = request_of(record, self.max_image_side)
        return request, request.plan(self.planner)

    async def _run(self, live: LiveJob) -> bool:
        """Run to the end and write the outcome; True once the job's record is final (by this run or another:
        its queue entry may then be acknowledged)."""
        record, generation = live.record, live.generation
        assert generation is not None, "a job is followed once submitted"
        # the outcome, kept off `live.record` until stored: the store may turn a result into a failure (finish)
        final: JobRecord | None = None
        try:
            result = await generation.images()
            final = record.model_copy(update={"result": result, "status": "succeeded", "step": record.total})
        except Cancelled:
            final = cancelled(record)
        except TenantGone:
            live.orphaned = True
        except Exception as error:  # noqa: BLE001 - recorded on the job: the client reads it there
            log.warning("job failed", extra={"job": record.id, "error": str(error)})
            final = record.model_copy(update={"status": "failed", "error": error_body(error)})
        if final is not None and record.cancel_requested and final.status != "cancelled":
            # cancelled after its last step, or while it failed: the DELETE promised "cancelled" (the store
            # would turn it so anyway: stores/job_updates.completion)
            final = cancelled(record)
        try:
            if live.orphaned or final is None:  # engine rows finished or cancelled; their output goes nowhere
                log_dropped(record.id, record.tenant)
                return True  # nothing will ever be written: its queue entry may be acknowledged
            if live.lost:
                log.info("duplicate run dropped", extra={"job": record.id, "owner": self.replica})
                return False
            final.updated = time.time()
            done = await finish(self.store, final, self.ttl_s, self.replica)
            live.record = final  # as stored (or as it will be retried), shown until `live` is dropped below
            return done
        finally:
            self.live.pop(record.id, None)
            live.touch()  # its followers (events) read it again: from the store now

    async def drain(self, timeout: float) -> None:
        """Let running jobs finish, up to `timeout`."""
        if self.tasks:
            await asyncio.wait(set(self.tasks.values()), timeout=timeout)
