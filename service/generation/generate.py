"""One image request, answered: the single path that the image routes and the jobs both take.

`submit` puts a planned request on this replica's engine as a `Generation`: one batch, awaited, rendered into
the `{"created", "data"}` that an answer or a job's result holds (results.py), or cancelled as a whole.

`generate` answers a synchronous request, and is the one place that knows where a request runs: here, when
this replica runs the model (plan -> room for its files -> submit -> wait -> render), or, on a replica of role
"api" (no model), as a job the workers run, answered once its record is final. Either way a client that
leaves frees its work and is answered 499.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from service.core.errors import ApiError
from service.generation.params import ImageParams
from service.generation.plan import Plan
from service.generation.results import Output, check_file_room, render
from service.generation.runner import Batch, ProgressCallback, Runner
from service.stores.base import JobRecord, Store

T = TypeVar("T")

# (params, tenant, epoch: the incarnation whose adapters it may use, request id, init image or None, strength)
# -> plan; blocking (ServiceState.plan)
Planner = Callable[[ImageParams, str, str | None, str, np.ndarray | None, float], Plan]

ClientGone = Callable[[], Awaitable[None]]  # returns once the client has left (or the server stops)


class Jobs(Protocol):
    """What `generate` needs of the jobs (service/jobs/manager.py implements it): the model that runs requests
    here, or the jobs that hand them to the workers. A protocol, because the jobs import this module: the
    generation package does not import the jobs package back."""

    runner: Runner | None  # None: role "api", no model here
    planner: Planner
    store: Store
    ttl_s: int

    async def create(self, request: ImageRequest) -> JobRecord: ...

    async def cancel(self, tenant: str, job_id: str, settle: bool = True) -> JobRecord | None: ...

    async def wait(self, tenant: str, job_id: str) -> JobRecord | None: ...

    async def forget(self, tenant: str, job_id: str) -> None: ...


@dataclass(frozen=True)
class ImageRequest:
    """An accepted image request and who made it."""

    params: ImageParams
    tenant: str
    epoch: str  # the incarnation the request authenticated as: only its adapters and files are used
    request_id: str
    base_url: str  # the service's public address, for url images
    image: bytes | None = None  # image-to-image: the uploaded file (a job stores it, to run it again)...
    pixels: np.ndarray | None = None  # ...and the same decoded, its size checked against the model
    strength: float = 0.8

    def plan(self, planner: Planner) -> Plan:
        """Blocking (store reads, adapter parsing): call it from a worker thread."""
        return planner(self.params, self.tenant, self.epoch, self.request_id, self.pixels, self.strength)

    def output(self, store: Store, ttl_s: int) -> Output:
        return Output(self.params.response_format, self.tenant, self.epoch, self.base_url, ttl_s, store)


class Generation:
    """A planned request on the engine (`submit`): its n images made, rendered and cancelled together."""

    def __init__(self, runner: Runner, batch: Batch, plan: Plan, output: Output) -> None:
        self.runner, self.batch, self.plan, self.output = runner, batch, plan, output

    def cancel(self) -> None:
        """Its rows leave the engine at the next tick; `images` then raises Cancelled."""
        self.batch.cancel()

    async def images(self) -> dict[str, Any]:
        """The OpenAI answer: `{"created", "data"}`, and `warnings` when there are any. The first failed image
        fails them all (and cancels the rest); QuotaExceeded or TenantGone when the url files cannot be stored
        (then none is)."""
        results = await self.runner.wait(self.batch)
        data = await asyncio.to_thread(render, results, self.plan.revised_prompt, self.output)
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if self.plan.warnings:  # a request honoured only in part says so (generation/warnings.py)
            answer["warnings"] = self.plan.warnings
        return answer


def submit(
    runner: Runner, plan: Plan, output: Output, on_progress: ProgressCallback | None = None, capped: bool = True
) -> Generation:
    """Queue the plan's requests as one batch: QueueFull, or TenantBusy over the tenant's work cap, refuse it
    before any image is queued. `capped=False`: work accepted earlier (a stored job) enters even over the cap."""
    return Generation(runner, runner.submit(plan.requests, on_progress, capped), plan, output)


async def generate(jobs: Jobs, request: ImageRequest, client_gone: ClientGone) -> dict[str, Any]:
    """The images of a synchronous request (`{"created", "data"}`), made here or by the workers."""
    if jobs.runner is None:
        return await _by_the_workers(jobs, request, client_gone)
    return await _here(jobs.runner, jobs.planner, request.output(jobs.store, jobs.ttl_s), request, client_gone)


async def _here(
    runner: Runner, planner: Planner, output: Output, request: ImageRequest, client_gone: ClientGone
) -> dict[str, Any]:
    plan = await asyncio.to_thread(request.plan, planner)
    # url images over the tenant's file quota are refused before they are made, not after (403)
    await asyncio.to_thread(check_file_room, output, len(plan.requests))
    generation = submit(runner, plan, output)

    async def free_rows() -> None:
        generation.cancel()

    return await _unless_gone(generation.images(), client_gone, free_rows)


async def _by_the_workers(jobs: Jobs, request: ImageRequest, client_gone: ClientGone) -> dict[str, Any]:
    """Role "api" (no model here): the request becomes a job for the workers (validated here first), answered
    once its record is final, then forgotten: its id was never shown, and kept, its record would hold a place
    in the tenant's job quota."""
    record = await jobs.create(request)

    async def cancel() -> None:
        await jobs.cancel(request.tenant, record.id, settle=False)  # nobody waits for its answer

    final = await _unless_gone(jobs.wait(request.tenant, record.id), client_gone, cancel)
    if final is None:
        raise ApiError(500, "the request expired before a worker finished it: retry", type="server_error")
    await jobs.forget(request.tenant, record.id)
    return _answer(final)


def _answer(final: JobRecord) -> dict[str, Any]:
    """A finished job as a synchronous answer: its result, or its error with the status it would have had."""
    if final.status == "succeeded":
        return final.result or {}
    error = final.error or {}
    client_error = 400 if error.get("type") == "invalid_request_error" else 500
    status = {"cancelled": 409, "quota_exceeded": 403}.get(error.get("code") or "", client_error)
    raise ApiError(
        status, error.get("message", "the request failed"), error.get("type", "server_error"), code=error.get("code")
    )


async def _unless_gone(work: Awaitable[T], client_gone: ClientGone, on_gone: Callable[[], Awaitable[None]]) -> T:
    """`work`'s result; if the client leaves first, `on_gone` frees what it holds and the answer is a 499."""
    waiter = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_gone())
    left = True
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        left = not waiter.done()
    finally:  # also when this request is cancelled (the server stops): the work must not outlive it
        watcher.cancel()
        if left:
            waiter.cancel()
            await on_gone()
    if left:
        raise ApiError(499, "the client closed the connection", code="client_closed")
    return waiter.result()
