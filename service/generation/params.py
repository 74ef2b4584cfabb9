"""What a generation asks for: OpenAI's images API fields plus the sampler knobs, shared by the synchronous
routes, async jobs (stored with the job, so a crashed replica's job can be re-run) and the edits form.

Every string and list has a hard ceiling here, so an oversized field is refused while the body is parsed,
before any per-item work (a 40,000-name `adapters` list once cost 13.8 s of CPU) and before it is stored with
a job. The operative limits are the settings (`Settings.limits`), checked in `service.generation.plan.check_limits`;
these ceilings only have to lie above any sensible setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.settings import MAX_CACHE_INTERVAL

MAX_SEED = 2**63 - 1
MAX_ADAPTER_WEIGHT = 10.0  # |weight| of an adapter, in `adapters` and in <lora:name:weight> tags alike
MAX_TEXT_CHARS = 10_000  # prompt and negative prompt (`limits.max_prompt_chars`, 1,000 by default, decides)
MAX_ADAPTERS = 64  # adapters named in one body (`limits.max_adapters_per_request`, 8 by default, decides)
MAX_FIELD_CHARS = 256  # `user`, `quality`, `style` (`limits.max_field_chars` may lower it)
MAX_NAME_CHARS = 100  # adapter names (service.tenants.names) and model names


class AdapterRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    weight: float = Field(default=1.0, ge=-MAX_ADAPTER_WEIGHT, le=MAX_ADAPTER_WEIGHT, allow_inf_nan=False)


class ImageParams(BaseModel):
    """`POST /v1/images/generations` and `POST /v1/jobs`; the form fields of `/v1/images/edits`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    n: int = Field(default=1, ge=1)
    size: str | None = Field(
        default=None, max_length=16, description="WIDTHxHEIGHT in ASCII digits, or 'auto': the model's native size"
    )
    response_format: Literal["b64_json", "url"] = "b64_json"
    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    # OpenAI fields, accepted so OpenAI clients work unchanged. Stored with a job for its lifetime, hence the
    # bound (`limits.max_field_chars`).
    user: str | None = Field(default=None, max_length=MAX_FIELD_CHARS, description="OpenAI's end-user id: not used")
    quality: str | None = Field(
        default=None, max_length=MAX_FIELD_CHARS, description="OpenAI's quality: has no effect here (use `steps`)"
    )
    style: str | None = Field(
        default=None, max_length=MAX_FIELD_CHARS, description="OpenAI's style: has no effect here (use the prompt)"
    )
    negative_prompt: str | None = Field(
        default=None,
        max_length=MAX_TEXT_CHARS,
        description="what to steer away from; left out, SDXL models whose config says so use zero embeddings",
    )
    # SDXL only (a 400 on SD-1.x/2.x models), as diffusers' StableDiffusionXLPipeline takes them.
    prompt_2: str | None = Field(
        default=None, max_length=MAX_TEXT_CHARS, description="SDXL: the second text encoder's prompt (default: prompt)"
    )
    negative_prompt_2: str | None = Field(
        default=None,
        max_length=MAX_TEXT_CHARS,
        description="SDXL: the second text encoder's negative prompt (default: negative_prompt)",
    )
    original_size: tuple[int, int] | None = Field(
        default=None, description="SDXL size conditioning: [height, width] of the 'original' image (default: size)"
    )
    crops_coords_top_left: tuple[int, int] | None = Field(
        default=None, description="SDXL size conditioning: [top, left] of the crop (default [0, 0])"
    )
    target_size: tuple[int, int] | None = Field(
        default=None, description="SDXL size conditioning: [height, width] aimed at (default: size)"
    )
    steps: int = Field(default=25, ge=1)
    guidance_scale: float = Field(default=5.0, allow_inf_nan=False)
    sampler: str = Field(default="ddim", max_length=32)
    eta: float = Field(default=0.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    variation_seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    variation_strength: float = Field(default=0.0, allow_inf_nan=False)
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    uncond_refresh: int = Field(default=1, ge=1)
    cache_interval: int = Field(
        default=1,
        ge=1,
        le=MAX_CACHE_INTERVAL,
        description="step caching: the full U-Net every k-th step, its shallow path on the cached deep feature in "
        "between (1: off); faster at a measured quality cost (BENCHMARKS.md)",
    )
    adapters: list[AdapterRef] = Field(default_factory=list, max_length=MAX_ADAPTERS)
