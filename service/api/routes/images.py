"""OpenAI-compatible image routes: text-to-image and image-to-image (edits), answered when the images are done."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import Caller, Model, RateLimited, State
from service.api.responses import GENERATION, errors
from service.api.schemas import ImageParams, ImagesResponse
from service.errors import ApiError
from service.generation import Plan
from service.images import ImageInputError, check_image, decode_image
from service.results import check_file_room, render
from service.runner import Runner

router = APIRouter(tags=["images"])

JSON_FORM_FIELDS = ("adapters", "guidance_interval")  # structured values sent as JSON strings in a form
MAX_NUMBER_CHARS = 32  # `strength`: a number, not a megabyte of digits


DISCONNECT_POLL_S = 0.5


async def _until_disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _until_done_or_gone(request: Request, waiter: asyncio.Future, on_gone: Callable[[], Any]) -> Any:
    """`waiter`'s result; if the client leaves first (or the server stops), `on_gone` frees its work and the
    answer is a 499."""
    watcher = asyncio.ensure_future(_until_disconnected(request))
    left = True
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        left = not waiter.done()
    finally:
        watcher.cancel()
        if left:
            waiter.cancel()
            await on_gone()
    if left:
        raise ApiError(499, "the client closed the connection", code="client_closed")
    return waiter.result()


async def _run(request: Request, state: State, caller: Caller, runner: Runner, plan: Plan) -> dict[str, Any]:
    """Images of the caller's incarnation: stored files are refused (TenantGone: 404) if it was deleted
    while they were made, even if a tenant of that name exists again."""
    # url images over the tenant's file quota are refused before they are made, not after (403)
    room = (state.store, caller.name, caller.epoch, plan.response_format, len(plan.requests))
    await asyncio.to_thread(check_file_room, *room)
    batch = runner.submit(plan.requests)

    async def free_rows() -> None:  # its rows leave the engine at the next tick
        batch.cancel()

    results = await _until_done_or_gone(request, asyncio.ensure_future(runner.wait(batch)), free_rows)
    data = await asyncio.to_thread(
        render,
        results,
        plan.revised_prompt,
        plan.response_format,
        caller.name,
        state.store,
        state.settings.public_base_url(),
        state.settings.limits.job_ttl_s,
        caller.epoch,
    )
    return {"created": int(time.time()), "data": data}


async def _run_queued(
    request: Request,
    caller: Caller,
    model: Model,
    params: ImageParams,
    image: bytes | None = None,
    strength: float = 0.8,
) -> dict[str, Any]:
    """Role "api" (no model here): the request becomes a job for the workers (validated here first), answered
    once its record is final."""
    jobs, tenant = model.jobs, caller.name
    base_url = request.app.state.settings.public_base_url()
    record = await jobs.create(tenant, caller.epoch, params, base_url, request.state.request_id, image, strength)

    async def cancel() -> None:
        await jobs.cancel(tenant, record.id)

    final = await _until_done_or_gone(request, asyncio.ensure_future(jobs.wait(tenant, record.id)), cancel)
    if final is not None and final.terminal:  # answered now: its record must not hold a place in the job quota
        await jobs.forget(tenant, record.id)
    if final is None:
        raise ApiError(500, "the request expired before a worker finished it: retry", type="server_error")
    if final.status == "succeeded":
        return final.result or {}
    error = final.error or {}
    client_error = 400 if error.get("type") == "invalid_request_error" else 500
    status = {"cancelled": 409, "quota_exceeded": 403}.get(error.get("code") or "", client_error)
    raise ApiError(
        status, error.get("message", "the request failed"), error.get("type", "server_error"), code=error.get("code")
    )


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses=errors(*GENERATION),
    response_model_exclude_none=True,
    dependencies=[RateLimited],
)
async def generations(params: ImageParams, request: Request, state: State, caller: Caller, model: Model) -> Any:
    """Text to image. `prompt` may carry `<lora:name:weight>` tags and your embeddings' tokens."""
    if model.runner is None:
        return await _run_queued(request, caller, model, params)
    plan = await asyncio.to_thread(state.plan, params, caller.name, caller.epoch, request.state.request_id)
    return await _run(request, state, caller, model.runner, plan)


async def _uploaded_image(data: bytes, largest: int, decode: bool) -> np.ndarray | None:
    """The edit's image, refused from its header when a side exceeds `largest`, before any pixel is decoded.
    `decode=False` (role "api": a worker decodes it from the job) checks the header only."""
    try:
        if not decode:
            await asyncio.to_thread(check_image, data, largest)
            return None
        return await asyncio.to_thread(decode_image, data, largest)
    except ImageInputError as error:
        raise ApiError(400, str(error), param="image", code="invalid_value") from None


@router.post(
    "/v1/images/edits",
    response_model=ImagesResponse,
    responses=errors(*GENERATION),
    response_model_exclude_none=True,
    dependencies=[RateLimited],
)
async def edits(request: Request, state: State, caller: Caller, model: Model) -> Any:
    """Image to image: multipart `image` (PNG, JPEG or WebP), `prompt`, `strength` (0-1, default 0.8) and the
    generation fields as form fields (`adapters` and `guidance_interval` as JSON)."""
    form = await request.form(max_files=2, max_fields=64)
    image = form.get("image") or form.get("image[]")
    if not isinstance(image, UploadFile):
        raise ApiError(400, "send the source image as the multipart file field `image`", param="image")
    if form.get("mask") is not None:
        raise ApiError(400, "masks (inpainting) are not supported: send only `image`", param="mask")
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k not in ("strength",)}
    for key in JSON_FORM_FIELDS:
        if key in fields:
            try:
                fields[key] = json.loads(fields[key])
            except json.JSONDecodeError:
                raise ApiError(400, f"{key} must be JSON in a form field, e.g. {key}=[...]", param=key) from None
    raw_strength = form.get("strength", "0.8")
    try:
        params = ImageParams.model_validate(fields)
        if not isinstance(raw_strength, str) or len(raw_strength) > MAX_NUMBER_CHARS:
            raise ValueError(raw_strength)
        strength = float(raw_strength)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
    except ValueError:
        raise ApiError(400, "strength must be a number between 0 and 1", param="strength") from None
    data = await image.read()
    if len(data) > state.settings.limits.max_upload_bytes:
        raise ApiError(413, f"the image is larger than {state.settings.limits.max_upload_bytes} bytes", param="image")
    # no side generated here is larger than 4 x native (GenerationRequest.validate)
    pixels = await _uploaded_image(data, 4 * model.info.image_size, decode=model.runner is not None)
    if model.runner is None:
        return await _run_queued(request, caller, model, params, data, strength)
    plan = await asyncio.to_thread(
        state.plan, params, caller.name, caller.epoch, request.state.request_id, pixels, strength
    )
    return await _run(request, state, caller, model.runner, plan)
