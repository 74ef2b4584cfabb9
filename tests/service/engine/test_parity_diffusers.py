"""Each sampler: the engine's image equals diffusers' StableDiffusionPipeline for the same model, prompt,
sampler, steps and seed (<= 1/255 per pixel on PyTorch, <= 2/255 on ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from service.engine import SAMPLERS, Engine, GenerationRequest
from service.engine.samplers import make_scheduler
from tests.service.engine.helpers import generate, img2img_image, max_pixel_diff

PROMPT = "a red circle on a blue background"


def diffusers_image(
    model_dir: Path,
    sampler: str,
    seed: int,
    steps: int,
    guidance: float,
    eta: float,
    around_unet: Callable[[torch.nn.Module], AbstractContextManager] = lambda _: nullcontext(),
) -> np.ndarray:
    """StableDiffusionPipeline's image; `around_unet`: a context its U-Net runs in (step caching's test)."""
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(sampler, dict(pipe.scheduler.config), steps)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    with torch.no_grad(), around_unet(pipe.unet):
        out = pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="np",
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        ).images[0]
    return (out * 255).round().astype(np.uint8)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_matches_stable_diffusion_pipeline(
    sampler: str, backend: str, request: pytest.FixtureRequest, tiny_model_dir: Path
) -> None:
    engine: Engine = request.getfixturevalue(f"{backend}_engine")
    eta = 0.5 if sampler == "ddim" else 0.0
    want = diffusers_image(tiny_model_dir, sampler, seed=7, steps=6, guidance=4.0, eta=eta)
    got = generate(engine, GenerationRequest(PROMPT, seed=7, steps=6, guidance_scale=4.0, sampler=sampler, eta=eta))
    assert max_pixel_diff(got[0], want) <= (1 if backend == "torch" else 2)


def test_unguided_matches_pipeline_without_cfg(torch_engine: Engine, tiny_model_dir: Path) -> None:
    want = diffusers_image(tiny_model_dir, "euler", seed=3, steps=5, guidance=1.0, eta=0.0)
    got = generate(torch_engine, GenerationRequest(PROMPT, seed=3, steps=5, guidance_scale=1.0, sampler="euler"))
    assert max_pixel_diff(got[0], want) <= 1
    assert torch_engine.stats["unet_rows"] == 5  # one row per step: no uncond rows for guidance <= 1


@pytest.mark.parametrize("sampler", ["ddim", "euler_a", "dpmpp_2m"])
def test_img2img_matches_diffusers(sampler: str, torch_engine: Engine, tiny_model_dir: Path) -> None:
    init = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        tiny_model_dir, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = make_scheduler(sampler, dict(pipe.scheduler.config), 8)
    pipe.set_progress_bar_config(disable=True)
    want = img2img_image(pipe, PROMPT, init, strength=0.6, steps=8, guidance=3.0, seed=5)
    got = generate(
        torch_engine,
        GenerationRequest(PROMPT, seed=5, steps=8, guidance_scale=3.0, sampler=sampler, init_image=init, strength=0.6),
    )
    assert max_pixel_diff(got[0], want) <= 1
