"""Step caching per row (DeepCache; the U-Net's split is export/step_cache.py): which of a request's steps run the
U-Net's shallow path on the deep features of an earlier full step, and the features each request keeps.

A request with `cache_interval` k runs the full U-Net on every k-th step (0, k, 2k, ...) and keeps the deep
feature of each U-Net row it ran (its cond row, and its uncond row when guided); the steps in between run the
shallow path on them. A step whose rows need a feature the request does not hold fresh (computed fewer than k
steps ago) runs full instead: the first guided step after a guidance interval opens, or an uncond row the
uncond-refresh option skipped on the last full step. So a feature is never older than k - 1 steps, and a row's
steps depend only on its own request, never on its neighbours in a call: batching stays invisible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from service.engine.errors import EngineError
from service.engine.guidance import Guidance
from service.engine.latents import latent_shape
from service.engine.request import GenerationRequest
from service.runtime.base import BackboneInfo

COND, UNCOND = "cond", "uncond"
FLOAT_BYTES = 4


@dataclass(frozen=True)
class CachedFeature:
    step: int  # the step whose full U-Net call computed it
    value: torch.Tensor  # [1, F, h, w]


def sides(mode: Guidance) -> tuple[str, ...]:
    """The U-Net rows a step of this guidance mode runs (guidance.py): cond, and uncond where it is recomputed."""
    return (COND, UNCOND) if mode in (Guidance.FUSED, Guidance.FRESH_UNCOND) else (COND,)


def runs_shallow(interval: int, step: int, mode: Guidance, features: dict[str, CachedFeature]) -> bool:
    """Whether step `step` runs the shallow path: not a scheduled full step, and every row it runs has a feature
    from fewer than `interval` steps ago."""
    if interval <= 1 or step % interval == 0:
        return False
    return all(side in features and step - features[side].step < interval for side in sides(mode))


def feature_bytes(guided: bool, latent_shape: tuple[int, ...], channels: int) -> int:
    """The bytes a request's kept features take: one [1, F, h, w] float tensor per U-Net row it runs."""
    _, _, height, width = latent_shape
    return (2 if guided else 1) * channels * height * width * FLOAT_BYTES


def request_feature_bytes(request: GenerationRequest, info: BackboneInfo, budget: int) -> int:
    """What `request` will hold of the engine's `step_cache_bytes` (`budget`) while it runs (0 without step
    caching); EngineError where that alone is over the budget, so it could never be admitted. Planning checks it
    too, so a job is refused before it is accepted."""
    if request.cache_interval <= 1:
        return 0
    need = feature_bytes(request.guided, latent_shape(request, info), info.step_cache_channels)
    if need > budget:
        raise EngineError(
            f"cache_interval keeps {need / 2**20:.1f} MiB of features for this request, more than this server holds "
            f"for step caching ({budget / 2**20:.1f} MiB): ask for a smaller image, or leave cache_interval at 1"
        )
    return need
