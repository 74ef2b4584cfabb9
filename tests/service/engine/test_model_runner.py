"""The U-Net side of a tick: rows of every guidance mode share its two calls without changing each other's
predictions, and the refresh rows' combination (the shared CFG function) equals the fused graph's."""

from __future__ import annotations

from service.engine import Engine, GenerationRequest
from service.runtime.base import Runtime
from tests.service.engine.helpers import generate, max_pixel_diff

PROMPT = "a red circle on a blue background"


def mixed() -> list[GenerationRequest]:
    """An unguided, a fused and an uncond-refresh request (fresh, cached, fresh uncond over three steps)."""
    return [
        GenerationRequest(PROMPT, seed=1, steps=3, guidance_scale=1.0, tenant="a"),
        GenerationRequest(PROMPT, seed=2, steps=3, guidance_scale=6.0, tenant="b"),
        GenerationRequest(PROMPT, seed=3, steps=3, guidance_scale=6.0, uncond_refresh=2, tenant="c"),
    ]


def test_every_mode_in_one_tick_gives_each_request_its_image_alone(torch_runtime: Runtime) -> None:
    alone = [generate(Engine(torch_runtime), r)[0] for r in mixed()]
    engine = Engine(torch_runtime)
    jobs = [engine.submit(r) for r in mixed()]
    engine.tick()
    # One fused call (2 rows) and one plain call: the unguided cond, the refresh cond, the refresh uncond.
    assert (engine.stats["unet_calls"], engine.stats["unet_rows"]) == (2, 5)
    engine.run_until_idle()
    for job, want in zip(jobs, alone, strict=True):
        assert max_pixel_diff(job.result(timeout=0).image, want) <= 1


def test_a_fresh_uncond_step_is_the_fused_graph_s_prediction(torch_runtime: Runtime) -> None:
    # One step: the refresh request's only step recomputes its uncond row, so the two differ only in where the
    # CFG combination ran (the engine vs the graph).
    fused, refreshed = (
        generate(
            Engine(torch_runtime), GenerationRequest(PROMPT, seed=4, steps=1, guidance_scale=7.5, uncond_refresh=k)
        )[0]
        for k in (1, 3)
    )
    unguided = generate(Engine(torch_runtime), GenerationRequest(PROMPT, seed=4, steps=1, guidance_scale=1.0))[0]
    assert max_pixel_diff(fused, refreshed) <= 1
    assert max_pixel_diff(fused, unguided) > 1  # guidance did act, so the comparison above means something
