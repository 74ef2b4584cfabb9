"""SDXL on the PyTorch and ONNX Runtime backends: the engine's image equals diffusers' StableDiffusionXLPipeline for the
same model, prompts, size conditioning, sampler, steps and seed (<= 1/255 per pixel on PyTorch, <= 2/255 on ONNX
Runtime), alone or batched with other requests."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.engine.errors import EngineError
from service.engine.samplers import make_scheduler
from service.runtime.torch_runtime import TorchRuntime
from tests.service.engine.helpers import generate, img2img_image, max_pixel_diff

PROMPT = "a red circle on a blue background"
BACKENDS = {"torch": 1, "ort": 2}  # backend -> the largest pixel difference from diffusers' image allowed


def engine_for(backend: str, request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("sdxl_engine" if backend == "torch" else "sdxl_ort_engine")


def _pipeline(model_dir: Path, sampler: str, steps: int, cls: type = StableDiffusionXLPipeline) -> Any:
    pipe = cls.from_pretrained(model_dir)
    pipe.scheduler = make_scheduler(sampler, dict(pipe.scheduler.config), steps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_image(
    model_dir: Path,
    sampler: str = "euler",
    steps: int = 5,
    seed: int = 7,
    lora: Path | None = None,
    ti: dict[str, torch.Tensor] | None = None,
    around_unet: Callable[[torch.nn.Module], AbstractContextManager] = lambda _: nullcontext(),
    **kwargs: Any,
) -> np.ndarray:
    """diffusers' image; `lora`: a LoRA file for `load_lora_weights`; `ti`: `clip_l` / `clip_g` vectors of the
    token <glow>, loaded into each encoder as diffusers' SDXL documentation does; `around_unet`: a context its
    U-Net runs in (step caching's test)."""
    pipe = _pipeline(model_dir, sampler, steps)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    if ti is not None:
        pipe.load_textual_inversion(
            ti["clip_l"], token="<glow>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        pipe.load_textual_inversion(
            ti["clip_g"], token="<glow>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
    with torch.no_grad(), around_unet(pipe.unet):
        out = pipe(
            num_inference_steps=steps, output_type="np", generator=torch.Generator().manual_seed(seed), **kwargs
        ).images[0]
    return (out * 255).round().astype(np.uint8)


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (diffusers' keyword arguments, the request's), the same call
    "no negative prompt (zeros)": ({"prompt": PROMPT, "guidance_scale": 4.0}, {"guidance_scale": 4.0}),
    "negative prompt": (
        {"prompt": PROMPT, "negative_prompt": "a green square", "guidance_scale": 4.0},
        {"negative_prompt": "a green square", "guidance_scale": 4.0},
    ),
    "second prompts": (
        {
            "prompt": PROMPT,
            "prompt_2": "two small stars",
            "negative_prompt": "blue",
            "negative_prompt_2": "a photo",
            "guidance_scale": 6.0,
        },
        {
            "prompt_2": "two small stars",
            "negative_prompt": "blue",
            "negative_prompt_2": "a photo",
            "guidance_scale": 6.0,
        },
    ),
    "size conditioning": (
        {
            "prompt": PROMPT,
            "guidance_scale": 4.0,
            "original_size": (48, 64),
            "crops_coords_top_left": (4, 8),
            "target_size": (32, 16),
        },
        {"guidance_scale": 4.0, "original_size": (48, 64), "crops_coords_top_left": (4, 8), "target_size": (32, 16)},
    ),
    "non-square": (
        {"prompt": PROMPT, "guidance_scale": 4.0, "height": 16, "width": 24},
        {"guidance_scale": 4.0, "height": 16, "width": 24},
    ),
    "unguided": ({"prompt": PROMPT, "guidance_scale": 1.0}, {"guidance_scale": 1.0}),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_stable_diffusion_xl_pipeline(
    case: str, backend: str, request: pytest.FixtureRequest, tiny_sdxl_model_dir: Path
) -> None:
    theirs, ours = CASES[case]
    want = diffusers_image(tiny_sdxl_model_dir, **theirs)
    got = generate(engine_for(backend, request), GenerationRequest(PROMPT, seed=7, steps=5, sampler="euler", **ours))
    assert max_pixel_diff(got[0], want) <= BACKENDS[backend]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler_a"])
def test_samplers_match(sampler: str, sdxl_engine: Engine, tiny_sdxl_model_dir: Path) -> None:
    want = diffusers_image(tiny_sdxl_model_dir, sampler, steps=4, seed=3, prompt=PROMPT, guidance_scale=5.0)
    got = generate(sdxl_engine, GenerationRequest(PROMPT, seed=3, steps=4, sampler=sampler, guidance_scale=5.0))
    assert max_pixel_diff(got[0], want) <= 1


def test_force_zeros_off_encodes_the_empty_negative(tiny_sdxl_model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    model = shutil.copytree(tiny_sdxl_model_dir, tmp_path / "model")
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    engine = Engine(TorchRuntime(model), EngineSettings(max_rows=32))
    want = diffusers_image(model, prompt=PROMPT, guidance_scale=4.0)
    got = generate(engine, GenerationRequest(PROMPT, seed=7, steps=5, sampler="euler", guidance_scale=4.0))
    assert max_pixel_diff(got[0], want) <= 1
    zeros = diffusers_image(tiny_sdxl_model_dir, prompt=PROMPT, guidance_scale=4.0)
    assert max_pixel_diff(want, zeros) > 1  # the setting matters: the test would see it ignored


def test_img2img_matches_diffusers(sdxl_engine: Engine, tiny_sdxl_model_dir: Path) -> None:
    init = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pipe = _pipeline(tiny_sdxl_model_dir, "euler", 8, StableDiffusionXLImg2ImgPipeline)
    want = img2img_image(pipe, PROMPT, init, strength=0.6, steps=8, guidance=3.0, seed=5)
    request = GenerationRequest(
        PROMPT, seed=5, steps=8, guidance_scale=3.0, sampler="euler", init_image=init, strength=0.6
    )
    assert max_pixel_diff(generate(sdxl_engine, request)[0], want) <= 1


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_request_is_the_same_alone_and_among_others(backend: str, request: pytest.FixtureRequest) -> None:
    """Rows with other prompts, negatives, time ids and guidance schedules share the calls."""
    sdxl_engine = engine_for(backend, request)
    mine = GenerationRequest(PROMPT, seed=11, steps=5, sampler="euler", guidance_scale=4.0, negative_prompt="blue")
    alone = generate(sdxl_engine, mine)[0]
    others = [
        GenerationRequest(
            f"a small {color} square",
            seed=20 + i,
            steps=3 + i % 4,
            sampler="euler",
            guidance_scale=[1.0, 3.0, 7.0][i % 3],
            negative_prompt=None if i % 2 else "green",
            prompt_2="a star" if i % 3 == 0 else None,
            original_size=(16 + 8 * i, 64),
            crops_coords_top_left=(i, 2 * i),
            guidance_interval=(0.0, 0.5) if i % 4 == 1 else (0.0, 1.0),
            uncond_refresh=2 if i % 4 == 2 else 1,
        )
        for i, color in enumerate(["red", "green", "blue", "yellow"] * 4)
    ][:15]
    together = generate(sdxl_engine, mine, *others)[0]
    assert max_pixel_diff(alone, together) <= 1


def test_xl_fields_are_refused_on_an_sd_model(torch_engine: Engine) -> None:
    for field, value in [("prompt_2", "x"), ("negative_prompt_2", "y"), ("original_size", (8, 8))]:
        with pytest.raises(EngineError, match=f"{field} condition SDXL models only"):
            torch_engine.submit(GenerationRequest(PROMPT, seed=1, **{field: value}))


def test_size_conditioning_is_bounded(sdxl_engine: Engine) -> None:
    with pytest.raises(EngineError, match="original_size must be two integers from 1"):
        sdxl_engine.submit(GenerationRequest(PROMPT, seed=1, original_size=(0, 64)))
    with pytest.raises(EngineError, match="crops_coords_top_left must be two integers from 0"):
        sdxl_engine.submit(GenerationRequest(PROMPT, seed=1, crops_coords_top_left=(-1, 0)))
