"""The engine's batching setting: continuous (requests join the running batch at any step) or request-level (a batch
is admitted only when the running one has finished), the baseline `diffplex loadtest compare` measures against."""

from __future__ import annotations

from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.torch_runtime import TorchRuntime
from tests.service.engine.helpers import generate, max_pixel_diff


def _steps_until_admitted(runtime: TorchRuntime, batching: str) -> tuple[int, list]:
    """Ticks the engine ran before a request submitted during a running one was admitted, and both images."""
    engine = Engine(runtime, EngineSettings(batching=batching))
    first = engine.submit(GenerationRequest("a red circle", seed=1, steps=6))
    engine.tick()
    late = engine.submit(GenerationRequest("a blue square", seed=2, steps=3))
    ticks = 0
    while late._entry.scheduler is None:  # not admitted yet
        engine.tick()
        ticks += 1
    engine.run_until_idle()
    return ticks, [first.result(timeout=0).image, late.result(timeout=0).image]


def test_request_level_batching_admits_a_batch_only_when_the_running_one_is_done(torch_runtime: TorchRuntime) -> None:
    continuous, images = _steps_until_admitted(torch_runtime, "continuous")
    request_level, same = _steps_until_admitted(torch_runtime, "request")
    assert continuous == 1  # joins at the next tick
    assert request_level == 6  # waits for the 5 remaining steps and the decode of the first request
    assert all(max_pixel_diff(a, b) <= 1 for a, b in zip(images, same, strict=True))  # the images do not change
    alone = generate(Engine(torch_runtime), GenerationRequest("a blue square", seed=2, steps=3))[0]
    assert max_pixel_diff(alone, same[1]) <= 1
