"""What a generation asks for: OpenAI's images API fields plus the sampler knobs, shared by the synchronous
routes, async jobs (stored with the job, so a crashed replica's job can be re-run) and the edits form."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class AdapterRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    weight: float = Field(default=1.0, ge=-10.0, le=10.0, allow_inf_nan=False)


class ImageParams(BaseModel):
    """`POST /v1/images/generations` and `POST /v1/jobs`; the form fields of `/v1/images/edits`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    size: str | None = Field(default=None, description="WIDTHxHEIGHT; default: the model's native size")
    response_format: Literal["b64_json", "url"] = "b64_json"
    model: str | None = None
    user: str | None = None  # OpenAI's end-user id: accepted, logged nowhere
    quality: str | None = None  # OpenAI fields without meaning here: accepted and ignored
    style: str | None = None
    negative_prompt: str = ""
    steps: int = Field(default=25, ge=1)
    guidance_scale: float = Field(default=5.0, allow_inf_nan=False)
    sampler: str = "ddim"
    eta: float = Field(default=0.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    variation_seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    variation_strength: float = Field(default=0.0, allow_inf_nan=False)
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    uncond_refresh: int = Field(default=1, ge=1)
    adapters: list[AdapterRef] = Field(default_factory=list)
