"""How each row is guided at its current step: the guidance interval, the uncond-refresh rule, and the call that
serves it. The CFG combination itself is `classifier_free_guidance` (export/guidance.py), the same function the
exported fused-CFG graph traces.
"""

from __future__ import annotations

from enum import Enum

from service.engine.request import GenerationRequest


class Guidance(Enum):
    """Which U-Net rows a request's step takes, and how its noise prediction is made from them."""

    NONE = "none"  # one cond row, its prediction as is: unguided (scale <= 1) or outside the guidance interval
    FUSED = "fused"  # cond and uncond rows in the fused-CFG call, combined inside the graph
    CACHED_UNCOND = "cached_uncond"  # one cond row, combined with the uncond prediction of an earlier step
    FRESH_UNCOND = "fresh_uncond"  # cond and uncond rows in the plain call; the uncond prediction is kept


def in_guidance_interval(step: int, steps: int, interval: tuple[float, float]) -> bool:
    """Whether step `step` of `steps` is guided: the fraction of the trajectory done lies in [start, end)
    (Kynkäänniemi et al. 2024, https://arxiv.org/abs/2404.07724)."""
    start, end = interval
    return start <= step / max(1, steps) < end


def uncond_due(step: int, every: int, cached: bool) -> bool:
    """Whether the unconditional prediction is recomputed at `step`: every `every` steps, and whenever none is
    cached (the first guided step after the interval opens)."""
    return not cached or step % every == 0


def row_guidance(request: GenerationRequest, step: int, steps: int, uncond_cached: bool) -> Guidance:
    """How `request`'s step `step` of `steps` is guided; `uncond_cached`: an earlier uncond prediction is kept."""
    if not (request.guided and in_guidance_interval(step, steps, request.guidance_interval)):
        return Guidance.NONE
    if request.uncond_refresh == 1:
        return Guidance.FUSED
    return Guidance.FRESH_UNCOND if uncond_due(step, request.uncond_refresh, uncond_cached) else Guidance.CACHED_UNCOND
