"""Asynchronous generation: create (202), poll, follow with server-sent events, cancel."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import Caller, Model, RateLimited, State, Tenant
from service.api.schemas import ImageParams, JobView
from service.core.errors import ApiError, not_found
from service.core.responses import AUTHENTICATED, GENERATION, content, errors
from service.generation.generate import ImageRequest
from service.stores.base import JobRecord

router = APIRouter(tags=["jobs"])

# Job ids are `job_<hex>`; anything outside this alphabet cannot name a job (and must not reach a store as a
# file name or key): it is answered exactly like a missing job.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _missing(job_id: str) -> ApiError:
    return not_found(f"job {job_id!r}")


def _found(job_id: str, record: object) -> object:
    """`record`, or the same 404 as a missing job (an unknown id, another tenant's job or a malformed id)."""
    if record is None:
        raise _missing(job_id)
    return record


def shown_status(record: JobRecord) -> str:
    """The record's status, or "cancelling" for an unfinished job whose cancel is recorded: it can only end
    cancelled (stores/job_updates.completion), and says so rather than "running" while its runner stops."""
    return "cancelling" if record.cancel_requested and not record.terminal else record.status


def view(record: JobRecord) -> dict[str, Any]:
    return JobView(
        id=record.id,
        status=shown_status(record),
        created=int(record.created),
        progress={"step": record.step, "total": record.total},
        result=record.result,
        error=record.error,
    ).model_dump(exclude_none=True)


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobView,
    responses=errors(*GENERATION),
    dependencies=[RateLimited],
)
async def create_job(params: ImageParams, request: Request, state: State, caller: Caller, model: Model) -> JSONResponse:
    """Validated and queued before the 202: poll `GET /v1/jobs/{id}` or follow `/events`."""
    base_url = state.settings.public_base_url()
    job = ImageRequest(params, caller.name, caller.epoch, request.state.request_id, base_url)
    record = await model.jobs.create(job)
    return JSONResponse(view(record), status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobView,
    response_model_exclude_none=True,
    responses=errors(*AUTHENTICATED, 404),
)
async def get_job(job_id: str, tenant: Tenant, model: Model) -> dict[str, Any]:
    record = await model.jobs.get(tenant, job_id) if JOB_ID.fullmatch(job_id) else None
    return view(_found(job_id, record))


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=JobView,
    response_model_exclude_none=True,
    responses=errors(*AUTHENTICATED, 404),
)
async def cancel_job(job_id: str, tenant: Tenant, model: Model) -> dict[str, Any]:
    """Cancels a queued or running job and answers the state it ends in: "cancelled" once its runner stopped
    it (within one engine step of hearing of the cancel, usually milliseconds; the answer waits up to two
    heartbeats for it), else "cancelling", which always ends "cancelled". A finished job is returned unchanged."""
    record = await model.jobs.cancel(tenant, job_id) if JOB_ID.fullmatch(job_id) else None
    return view(_found(job_id, record))


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: content("text/event-stream", "Server-sent events"), **errors(*AUTHENTICATED, 404)},
)
async def job_events(job_id: str, tenant: Tenant, state: State, model: Model) -> StreamingResponse:
    """`text/event-stream`: `queued`, `step` ({step, total}), then `done` (with the result) or `error`."""
    if not JOB_ID.fullmatch(job_id) or await model.jobs.get(tenant, job_id) is None:
        raise _missing(job_id)

    async def stream() -> AsyncIterator[str]:
        async for event, data in model.jobs.events(tenant, job_id):
            if event == "keepalive":
                yield f": keepalive {int(time.time())}\n\n"
            else:
                yield f"event: {event}\ndata: {json.dumps(data)}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
