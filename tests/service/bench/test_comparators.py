"""The benchmark's comparators: split CFG makes the fused graph's images in two plain calls, and request-level
batching makes the same images in more ticks (a batch waits for its longest request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.comparators import SplitCFGRuntime, run_request_level
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.torch_runtime import TorchRuntime
from tests.service.engine.helpers import generate, max_pixel_diff

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def runtime(tiny_model_dir: Path) -> TorchRuntime:
    return TorchRuntime(tiny_model_dir, lora_rank=4, vpt_tokens=3)


def requests() -> list[GenerationRequest]:
    return [GenerationRequest(PROMPT, seed=i, steps=[1, 3, 1, 3][i], guidance_scale=6.0) for i in range(4)]


def test_split_cfg_makes_the_fused_graph_s_images(runtime: TorchRuntime) -> None:
    fused = generate(Engine(runtime), *requests())
    split_runtime = SplitCFGRuntime(runtime)
    split = generate(Engine(split_runtime), *requests())
    for a, b in zip(fused, split, strict=True):
        assert max_pixel_diff(a, b) <= 1
    assert split_runtime.name.endswith("(split CFG)") and split_runtime.info is runtime.info


def test_request_level_batching_waits_for_each_batch_s_longest_request(runtime: TorchRuntime) -> None:
    settings = EngineSettings(max_active=2)
    continuous = Engine(runtime, settings)
    images = generate(continuous, *requests())
    static = Engine(runtime, settings)
    results = run_request_level(static, requests(), batch=2)
    assert all(max_pixel_diff(r.image, want) <= 1 for r, want in zip(results, images, strict=True))
    # Steps 1 and 3, then 1 and 3: 3 + 3 ticks; continuously the short requests' slots are refilled: 5.
    assert (static.stats["ticks"], continuous.stats["ticks"]) == (6, 5)
