"""OpenAI-compatible image routes: text-to-image and image-to-image (edits), answered when the images are done
(service/generation/generate.py makes them, here or through the workers)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import Caller, Model, RateLimited, State
from service.api.schemas import ImageParams, ImagesResponse
from service.core.errors import ApiError
from service.core.responses import GENERATION, errors
from service.engine.request import max_side
from service.generation.generate import ClientGone, ImageRequest, generate
from service.generation.images import ImageInputError, decode_image

router = APIRouter(tags=["images"])

# Structured values sent as JSON strings in a form (the last three: SDXL's size conditioning, e.g. "[1024, 1024]").
JSON_FORM_FIELDS = ("adapters", "guidance_interval", "original_size", "crops_coords_top_left", "target_size")
MAX_NUMBER_CHARS = 32  # `strength`: a number, not a megabyte of digits
DISCONNECT_POLL_S = 0.5


def _client_gone(request: Request) -> ClientGone:
    """Returns once the client disconnected (polled: Starlette tells only when asked)."""

    async def until_disconnected() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    return until_disconnected


def _image_request(request: Request, state: State, caller: Caller, params: ImageParams) -> ImageRequest:
    """Made for the caller's incarnation: if it is deleted meanwhile, its files are refused (404), even if a
    tenant of that name exists again."""
    base_url = state.settings.public_base_url()
    return ImageRequest(params, caller.name, caller.epoch, request.state.request_id, base_url)


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses=errors(*GENERATION),
    response_model_exclude_none=True,
    dependencies=[RateLimited],
)
async def generations(params: ImageParams, request: Request, state: State, caller: Caller, model: Model) -> Any:
    """Text to image. `prompt` may carry `<lora:name:weight>` tags and your embeddings' tokens."""
    return await generate(model.jobs, _image_request(request, state, caller, params), _client_gone(request))


async def _uploaded_image(data: bytes, largest: int) -> np.ndarray:
    """The edit's image, refused from its header when a side exceeds `largest`, before any pixel is decoded."""
    try:
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
    generation fields as form fields (`adapters`, `guidance_interval` and SDXL's sizes as JSON)."""
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
    pixels = await _uploaded_image(data, max_side(model.info.image_size))
    edit = replace(_image_request(request, state, caller, params), image=data, pixels=pixels, strength=strength)
    return await generate(model.jobs, edit, _client_gone(request))
