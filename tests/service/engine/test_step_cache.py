"""Step caching per row (`cache_interval`): which steps run shallow, the image against DeepCache applied to diffusers'
own pipeline, batch invariance among rows on other steps and adapters, and the bounds a request meets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from export.step_cache import shallow_forward
from service.core.settings import EngineSettings
from service.engine import Engine, EngineError, GenerationRequest
from service.engine.guidance import Guidance
from service.engine.step_cache import COND, UNCOND, CachedFeature, feature_bytes, runs_shallow
from service.runtime.torch_runtime import TorchRuntime
from tests.service.engine.helpers import generate, max_pixel_diff, random_lora, random_vpt
from tests.service.engine.test_parity_diffusers import PROMPT, diffusers_image
from tests.service.engine.test_sdxl import BACKENDS, engine_for
from tests.service.engine.test_sdxl import diffusers_image as sdxl_image


def _kept(*steps: tuple[str, int]) -> dict[str, CachedFeature]:
    return {side: CachedFeature(step, torch.zeros(1)) for side, step in steps}


def test_a_step_runs_shallow_between_scheduled_full_steps_on_fresh_features_only() -> None:
    both = _kept((COND, 3), (UNCOND, 3))
    assert [runs_shallow(3, step, Guidance.FUSED, both) for step in range(3, 7)] == [False, True, True, False]
    assert not runs_shallow(1, 4, Guidance.FUSED, both)  # off
    assert not runs_shallow(3, 4, Guidance.FUSED, _kept((COND, 3)))  # no uncond feature: a full step
    assert runs_shallow(3, 4, Guidance.NONE, _kept((COND, 3)))  # an unguided step needs the cond row's only
    assert runs_shallow(3, 4, Guidance.CACHED_UNCOND, _kept((COND, 3)))  # the uncond prediction is reused
    assert not runs_shallow(3, 4, Guidance.FRESH_UNCOND, _kept((COND, 3)))
    assert not runs_shallow(3, 5, Guidance.FUSED, _kept((COND, 2), (UNCOND, 2)))  # 3 steps old: stale
    assert feature_bytes(True, (1, 8, 16, 16), 64) == 2 * 64 * 16 * 16 * 4


@contextmanager
def deep_cached(unet: torch.nn.Module, interval: int) -> Iterator[None]:
    """DeepCache applied to diffusers' own pipeline, as its authors' helper does: the U-Net's k-th calls run whole
    and keep the deep feature, the calls between return the shallow path on it (one call per step: the pipeline
    stacks its uncond and cond rows in one batch)."""
    state = {"calls": 0, "feature": None}
    seen: list[torch.Tensor] = []
    keep = unet.up_blocks[-1].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True
    )

    def replace(_module: torch.nn.Module, args: tuple, kwargs: dict, output: tuple) -> tuple:
        call = state["calls"]
        state["calls"] += 1
        if call % interval == 0:
            state["feature"] = seen[0]
            seen.clear()
            return output
        sample, timestep = args[:2]
        shallow = shallow_forward(
            unet, state["feature"], sample, timestep, kwargs["encoder_hidden_states"], kwargs.get("added_cond_kwargs")
        )
        seen.clear()
        return shallow

    swap = unet.register_forward_hook(replace, with_kwargs=True)
    try:
        yield
    finally:
        keep.remove()
        swap.remove()


@pytest.mark.parametrize("backend", ["torch", "ort"])
@pytest.mark.parametrize("interval", [2, 3])
def test_equals_deepcache_on_the_diffusers_pipeline(
    backend: str, interval: int, request: pytest.FixtureRequest, tiny_model_dir: Path
) -> None:
    engine: Engine = request.getfixturevalue(f"{backend}_engine")
    steps = 7
    want = diffusers_image(
        tiny_model_dir, "ddim", 4, steps, 4.0, 0.0, around_unet=lambda unet: deep_cached(unet, interval)
    )
    got = generate(engine, GenerationRequest(PROMPT, seed=4, steps=steps, guidance_scale=4.0, cache_interval=interval))
    assert max_pixel_diff(got[0], want) <= (1 if backend == "torch" else 2)
    full_steps = len(range(0, steps, interval))
    assert engine.stats["unet_shallow_rows"] == 2 * (steps - full_steps)
    assert engine.stats["unet_rows"] == 2 * steps
    plain = generate(engine, GenerationRequest(PROMPT, seed=4, steps=steps, guidance_scale=4.0))
    assert max_pixel_diff(plain[0], want) > 2  # the shallow steps change the image: the option is not a no-op


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_sdxl_equals_deepcache_on_the_diffusers_pipeline(
    backend: str, request: pytest.FixtureRequest, tiny_sdxl_model_dir: Path
) -> None:
    """SDXL: the added conditioning reaches the shallow path too (its time embedding)."""
    want = sdxl_image(
        tiny_sdxl_model_dir, prompt=PROMPT, guidance_scale=4.0, around_unet=lambda unet: deep_cached(unet, 2)
    )
    request_ = GenerationRequest(PROMPT, seed=7, steps=5, sampler="euler", guidance_scale=4.0, cache_interval=2)
    got = generate(engine_for(backend, request), request_)
    assert max_pixel_diff(got[0], want) <= BACKENDS[backend]


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_a_request_is_the_same_alone_or_among_15_rows_on_other_steps_and_adapters(
    backend: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{backend}_engine")
    spec = engine.info.spec
    lora, vpt = random_lora(spec, seed=1), random_vpt(spec, seed=2)

    def ours() -> GenerationRequest:
        return GenerationRequest(PROMPT, seed=9, steps=8, cache_interval=3, adapters=((lora, 0.8),))

    def neighbour(i: int) -> GenerationRequest:
        options = [
            {"cache_interval": 2},
            {"cache_interval": 3, "guidance_interval": (0.0, 0.5)},
            {"cache_interval": 4, "uncond_refresh": 2},
            {"cache_interval": 2, "guidance_scale": 1.0},
            {},
        ][i % 5]
        adapters = [(), ((random_lora(spec, seed=10 + i), 1.0),), ((vpt, 1.0),)][i % 3]
        return GenerationRequest("a green square", seed=i, steps=4 + i, adapters=adapters, **options)

    alone = generate(engine, ours())[0]
    crowd = generate(engine, *[neighbour(i) for i in range(7)], ours(), *[neighbour(i) for i in range(7, 15)])
    assert max_pixel_diff(crowd[7], alone) <= 1
    for i, image in enumerate(crowd[:7] + crowd[8:]):
        assert max_pixel_diff(image, generate(engine, neighbour(i))[0]) <= 1, i


def test_cache_interval_is_bounded_and_needs_the_shallow_graphs(torch_runtime: TorchRuntime) -> None:
    engine = Engine(torch_runtime)
    for interval in (0, 11):
        with pytest.raises(EngineError, match="cache_interval must be between 1 and 10"):
            engine.submit(GenerationRequest(PROMPT, seed=0, cache_interval=interval))
    without = dataclasses.replace(torch_runtime.info, step_cache_channels=0)  # e.g. an export made before them
    with pytest.raises(EngineError, match="re-run diffplex export"):
        GenerationRequest(PROMPT, seed=0, cache_interval=2).validate(without.image_size, without.size_multiple)


def test_features_are_bounded_in_bytes_a_request_waits_for_room(torch_runtime: TorchRuntime) -> None:
    info = torch_runtime.info
    one = feature_bytes(True, (1, info.latent_channels, info.latent_size, info.latent_size), info.step_cache_channels)
    tight = Engine(torch_runtime, EngineSettings(step_cache_bytes=one - 1))
    with pytest.raises(EngineError, match="more than this server holds for step caching"):
        tight.submit(GenerationRequest(PROMPT, seed=0, cache_interval=2))
    engine = Engine(torch_runtime, EngineSettings(step_cache_bytes=one))  # room for one request's features
    active: list[int] = []
    original = engine._denoise

    def watch(rows: list) -> None:
        active.append(sum(e.request.cache_interval > 1 for e in engine._active))
        original(rows)

    engine._denoise = watch
    requests = [GenerationRequest(PROMPT, seed=s, steps=3, cache_interval=2) for s in range(2)]
    plain = GenerationRequest(PROMPT, seed=5, steps=3)
    images = generate(engine, *requests, plain)
    assert max(active) == 1  # never both at once; the request without step caching ran beside them
    assert engine._feature_bytes == 0  # released when they finished
    again = GenerationRequest(PROMPT, seed=1, steps=3, cache_interval=2)
    assert max_pixel_diff(images[1], generate(Engine(torch_runtime), again)[0]) <= 1  # waiting changed nothing
