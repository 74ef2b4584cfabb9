"""Engine properties: batch invariance, no leakage between slots, determinism, variation seeds, the CFG
options, fairness, cancellation and the bounded queue."""

from __future__ import annotations

import threading

import pytest

from service.core.settings import EngineSettings
from service.engine import Cancelled, Engine, EngineError, GenerationRequest, QueueFull
from tests.service.engine.helpers import generate, max_pixel_diff, random_lora, random_vpt

PROMPT = "a red circle on a blue background"


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_batch_invariance_among_other_tenants_adapters(backend: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(f"{backend}_engine")
    spec = engine.info.spec
    mine = GenerationRequest(PROMPT, seed=11, steps=4, adapters=((random_lora(spec, 1), 0.8),), tenant="a")
    alone = generate(engine, mine)[0]
    others = [
        GenerationRequest(
            "a photo of a green square",
            seed=100 + i,
            steps=3 + i % 3,
            guidance_scale=1.0 if i % 4 == 0 else 6.0,
            adapters=((random_lora(spec, 10 + i), 1.0),) if i % 2 else ((random_vpt(spec, 20 + i), 1.0),),
            tenant=f"t{i % 5}",
        )
        for i in range(15)
    ]
    again = GenerationRequest(PROMPT, seed=11, steps=4, adapters=((random_lora(spec, 1), 0.8),), tenant="a")
    batched = generate(engine, *others[:7], again, *others[7:])[7]
    assert max_pixel_diff(alone, batched) <= 1


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_slot0_rows_equal_the_base_model_beside_adapted_rows(backend: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(f"{backend}_engine")
    spec = engine.info.spec
    base = generate(engine, GenerationRequest(PROMPT, seed=2, steps=4))[0]
    neighbours = [
        GenerationRequest(PROMPT, seed=2, steps=4, adapters=((random_lora(spec, 3), 1.0), (random_vpt(spec, 4), 1.0))),
        GenerationRequest(PROMPT, seed=2, steps=4, adapters=((random_vpt(spec, 5), 1.0),)),
    ]
    images = generate(engine, neighbours[0], GenerationRequest(PROMPT, seed=2, steps=4), neighbours[1])
    assert max_pixel_diff(images[1], base) <= 1
    assert max_pixel_diff(images[0], base) > 1 and max_pixel_diff(images[2], base) > 0  # the adapters did act


def test_same_seed_same_image_and_other_seed_differs(torch_engine: Engine) -> None:
    a, b, c = generate(
        torch_engine, *(GenerationRequest(PROMPT, seed=s, steps=3, sampler="euler_a") for s in (1, 1, 2))
    )
    assert max_pixel_diff(a, b) == 0
    assert max_pixel_diff(a, c) > 0


def test_variation_seed_walks_from_seed_to_variation_seed(torch_engine: Engine) -> None:
    def image(**kw: object) -> object:
        return generate(torch_engine, GenerationRequest(PROMPT, steps=3, **kw))[0]

    seed_only, other_seed = image(seed=1), image(seed=2)
    assert max_pixel_diff(image(seed=1, variation_seed=2, variation_strength=0.0), seed_only) == 0
    assert max_pixel_diff(image(seed=1, variation_seed=2, variation_strength=1.0), other_seed) <= 1
    halfway = image(seed=1, variation_seed=2, variation_strength=0.5)
    assert max_pixel_diff(halfway, seed_only) > 0 and max_pixel_diff(halfway, other_seed) > 0


def test_uncond_embedding_is_cached_per_negative_prompt_and_adapters(torch_engine: Engine) -> None:
    generate(torch_engine, *(GenerationRequest(PROMPT, seed=s, steps=1) for s in range(3)))
    assert (torch_engine.text.uncond_misses, torch_engine.text.uncond_hits) == (1, 2)
    generate(torch_engine, GenerationRequest(PROMPT, seed=0, steps=1, negative_prompt="blue"))
    assert torch_engine.text.uncond_misses == 2


def test_guidance_interval_and_uncond_refresh_cut_unet_rows(torch_engine: Engine) -> None:
    generate(torch_engine, GenerationRequest(PROMPT, seed=0, steps=10))
    full = torch_engine.stats["unet_rows"]
    generate(torch_engine, GenerationRequest(PROMPT, seed=0, steps=10, guidance_interval=(0.0, 0.5)))
    interval = torch_engine.stats["unet_rows"] - full
    generate(torch_engine, GenerationRequest(PROMPT, seed=0, steps=10, uncond_refresh=5))
    refresh = torch_engine.stats["unet_rows"] - full - interval
    assert (full, interval, refresh) == (20, 15, 12)


def test_tenants_share_calls_round_robin(torch_runtime: object) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_rows=4))
    hog = [
        engine.submit(GenerationRequest(PROMPT, seed=i, steps=2, guidance_scale=1.0, tenant="hog")) for i in range(8)
    ]
    small = engine.submit(GenerationRequest(PROMPT, seed=9, steps=2, guidance_scale=1.0, tenant="small"))
    engine.tick()
    engine.tick()  # two ticks of 4 rows: the small tenant's request is in the first batch, so it is done
    assert small.future.done() and not all(j.future.done() for j in hog)
    engine.run_until_idle()
    assert all(j.future.done() for j in hog)


def test_requests_join_while_others_run(torch_engine: Engine) -> None:
    first = torch_engine.submit(GenerationRequest(PROMPT, seed=1, steps=6))
    torch_engine.tick()
    torch_engine.tick()
    second = torch_engine.submit(GenerationRequest(PROMPT, seed=1, steps=6))
    torch_engine.run_until_idle()
    assert max_pixel_diff(first.result().image, second.result().image) == 0


def test_cancel_and_bounded_queue(torch_runtime: object) -> None:
    engine = Engine(torch_runtime, EngineSettings(max_queue=2))
    job = engine.submit(GenerationRequest(PROMPT, seed=1, steps=50))
    engine.submit(GenerationRequest(PROMPT, seed=2, steps=1))
    with pytest.raises(QueueFull):
        engine.submit(GenerationRequest(PROMPT, seed=3, steps=1))
    engine.tick()
    job.cancel()
    engine.run_until_idle()
    with pytest.raises(Cancelled):
        job.result(timeout=0)
    assert engine.load == 0


def test_a_cancel_at_a_steps_end_runs_no_other_step(torch_runtime: object) -> None:
    """Cancelled while a tick reports its step (the latest moment in that tick): the next tick drops it."""
    engine = Engine(torch_runtime)
    steps: list[int] = []

    def progress(step: int, total: int) -> None:
        steps.append(step)
        if step == 5:
            job.cancel()

    job = engine.submit(GenerationRequest(PROMPT, seed=1, steps=50), progress)
    other = engine.submit(GenerationRequest(PROMPT, seed=2, steps=8))
    engine.run_until_idle()
    with pytest.raises(Cancelled):
        job.result(timeout=0)
    assert steps == [1, 2, 3, 4, 5] and other.result(timeout=0).image.shape == (16, 16, 3)


def test_a_cancel_from_another_thread_stops_the_request_within_one_step(torch_runtime: object) -> None:
    """The engine's own thread runs the request; a cancel at any moment lets the tick in flight finish its step,
    and no other step runs."""
    engine = Engine(torch_runtime)
    steps: list[int] = []
    running = threading.Event()

    def progress(step: int, total: int) -> None:
        steps.append(step)
        if step == 5:
            running.set()

    engine.start()
    try:
        job = engine.submit(GenerationRequest(PROMPT, seed=1, steps=500), progress)
        assert running.wait(60)
        job.cancel()
        at_cancel = len(steps)  # steps already reported once the cancel is set
        with pytest.raises(Cancelled):
            job.result(timeout=60)
        assert len(steps) <= at_cancel + 1, (at_cancel, len(steps))
        assert engine.load == 0
    finally:
        engine.stop(drain=False, timeout=30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"sampler": "plms"}, "unknown sampler"),
        ({"width": 15}, "multiple of"),
        ({"guidance_interval": (0.5, 0.2)}, "guidance_interval"),
        ({"variation_strength": 2.0}, "variation_strength"),
    ],
)
def test_bad_requests_are_refused_at_submission(torch_engine: Engine, change: dict, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        torch_engine.submit(GenerationRequest(PROMPT, seed=0, **change))


def test_background_thread_serves_and_drains(torch_runtime: object) -> None:
    engine = Engine(torch_runtime)
    engine.start()
    jobs = [engine.submit(GenerationRequest(PROMPT, seed=s, steps=3)) for s in range(4)]
    engine.stop(drain=True, timeout=60)
    assert all(j.result(timeout=0).image.shape == (16, 16, 3) for j in jobs)


def test_a_future_cancelled_by_its_caller_leaves_the_engine(torch_runtime: object) -> None:
    """asyncio.wrap_future cancels the engine's future when an awaiting handler is cancelled."""
    engine = Engine(torch_runtime)
    running = engine.submit(GenerationRequest(PROMPT, seed=1, steps=20))
    engine.tick()
    other = engine.submit(GenerationRequest(PROMPT, seed=2, steps=2))
    assert running.future.cancel()
    engine.run_until_idle()
    assert other.result(timeout=0).image.shape == (16, 16, 3)
    assert running.future.cancelled() and engine.load == 0
    assert engine.stats["unet_rows"] < 2 * 20  # the cancelled request stopped taking rows
