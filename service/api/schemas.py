"""Response bodies and admin requests; generation requests are `service.generation.params.ImageParams`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.errors import ErrorBody, ErrorDetail
from service.generation.params import AdapterRef, ImageParams

__all__ = [
    "AdapterRef",
    "ErrorBody",
    "ErrorDetail",
    "ImageData",
    "ImageParams",
    "ImagesResponse",
    "JobView",
    "TenantCreate",
    "TenantCreated",
]


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    seed: int
    timings: dict[str, float]


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    warnings: list[str] | None = Field(
        default=None,
        description="What the request asked for that the model honours only in part: tokens no embedding defines, "
        "words the model never learned, a size other than the native one",
    )


class JobView(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] = Field(
        description="succeeded, failed and cancelled are final; cancelling (a cancel was accepted, the job is "
        "being stopped) always ends cancelled"
    )
    created: int
    progress: dict[str, int]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=63)  # `service.tenants.names.check_tenant_name` checks its alphabet


class TenantCreated(BaseModel):
    tenant: str
    api_key: str
