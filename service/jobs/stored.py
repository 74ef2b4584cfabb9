"""A job's request as its record keeps it, and back: enough for any replica to run it again, later, and make
the same images (its seed resolved when it was accepted, its source image included)."""

from __future__ import annotations

import base64
from typing import Any

from service.generation.generate import ImageRequest
from service.generation.images import decode_image
from service.generation.params import ImageParams
from service.stores.base import JobRecord


def stored_request(request: ImageRequest, seed: int) -> dict[str, Any]:
    """What the record keeps of `request`, with the seed its plan drew (a re-run makes the same images)."""
    params = request.params.model_copy(update={"seed": seed})
    stored: dict[str, Any] = {"params": params.model_dump(mode="json"), "base_url": request.base_url}
    if request.image is not None:
        stored |= {"image": base64.b64encode(request.image).decode(), "strength": request.strength}
    return stored


def request_of(record: JobRecord, max_image_side: int) -> ImageRequest:
    """Blocking (decodes the source image): the request of a stored job, run as the job's own id, by the
    tenant incarnation that made it."""
    stored = record.request
    image = None if stored.get("image") is None else base64.b64decode(stored["image"])
    return ImageRequest(
        params=ImageParams.model_validate(stored.get("params", {})),
        tenant=record.tenant,
        epoch=record.epoch,
        request_id=record.id,
        base_url=stored.get("base_url", ""),
        image=image,
        pixels=None if image is None else decode_image(image, max_image_side),
        strength=float(stored.get("strength", 0.8)),
    )
