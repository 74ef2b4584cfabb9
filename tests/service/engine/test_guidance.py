"""Which rows a request's step takes: the guidance interval, the uncond-refresh rule, and the mode combining them."""

from __future__ import annotations

import pytest

from service.engine.guidance import Guidance, in_guidance_interval, row_guidance, uncond_due
from service.engine.request import GenerationRequest


def test_the_interval_is_half_open_over_the_fraction_done() -> None:
    inside = [in_guidance_interval(step, 10, (0.2, 0.5)) for step in range(10)]
    assert inside == [False, False, True, True, True, False, False, False, False, False]
    assert all(in_guidance_interval(step, 4, (0.0, 1.0)) for step in range(4))


def test_the_uncond_prediction_is_refreshed_every_k_steps_or_when_none_is_kept() -> None:
    assert [uncond_due(step, 3, cached=True) for step in range(7)] == [True, False, False, True, False, False, True]
    assert uncond_due(4, 3, cached=False)  # the interval opened between refreshes: nothing to reuse


@pytest.mark.parametrize(
    ("options", "step", "cached", "mode"),
    [
        ({"guidance_scale": 1.0}, 0, False, Guidance.NONE),  # a scale of 1 is the cond prediction: no uncond row
        ({}, 0, False, Guidance.FUSED),
        ({"guidance_interval": (0.0, 0.5)}, 5, False, Guidance.NONE),  # past the interval
        ({"uncond_refresh": 2}, 0, False, Guidance.FRESH_UNCOND),
        ({"uncond_refresh": 2}, 1, True, Guidance.CACHED_UNCOND),
        ({"uncond_refresh": 2}, 2, True, Guidance.FRESH_UNCOND),
        ({"uncond_refresh": 2, "guidance_interval": (0.5, 1.0)}, 5, False, Guidance.FRESH_UNCOND),
    ],
)
def test_row_guidance(options: dict, step: int, cached: bool, mode: Guidance) -> None:
    request = GenerationRequest("a red circle", seed=0, steps=10, **options)
    assert row_guidance(request, step, 10, cached) is mode
