"""Starting latents and pixels: the shape a request's size gives, txt2img's scaled noise, img2img's skipped
steps, and the decoded range mapped to bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine.errors import EngineError
from service.engine.latents import img2img_latents, latent_shape, to_pixels, txt2img_latents
from service.engine.request import GenerationRequest
from service.engine.samplers import make_scheduler
from service.runtime.base import Runtime

PROMPT = "a red circle"


def test_the_latent_shape_follows_the_request_size(torch_runtime: Runtime) -> None:
    info = torch_runtime.info
    factor, channels = info.vae_scale_factor, info.latent_channels
    native = info.image_size // factor
    assert latent_shape(GenerationRequest(PROMPT, seed=0), info) == (1, channels, native, native)
    wide = GenerationRequest(PROMPT, seed=0, width=2 * info.image_size)
    assert latent_shape(wide, info) == (1, channels, native, 2 * native)


def test_txt2img_runs_every_timestep_from_scaled_noise(torch_runtime: Runtime) -> None:
    info = torch_runtime.info
    request = GenerationRequest(PROMPT, seed=0, steps=5, sampler="euler")
    scheduler = make_scheduler("euler", info.scheduler_config, 5)
    shape = latent_shape(request, info)
    latents, timesteps = txt2img_latents(request, scheduler, torch.Generator().manual_seed(0), shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(latents, noise * scheduler.init_noise_sigma)  # Euler starts at sigma_max, not 1
    assert timesteps == list(scheduler.timesteps) and len(timesteps) == 5


def test_img2img_skips_the_first_part_of_the_trajectory(torch_runtime: Runtime) -> None:
    info = torch_runtime.info
    image = np.full((info.image_size, info.image_size, 3), 128, dtype=np.uint8)
    request = GenerationRequest(PROMPT, seed=0, steps=10, init_image=image, strength=0.6)
    scheduler = make_scheduler("ddim", info.scheduler_config, 10)
    shape = latent_shape(request, info)
    latents, timesteps = img2img_latents(request, scheduler, torch.Generator().manual_seed(0), shape, torch_runtime)
    assert timesteps == list(scheduler.timesteps)[4:] and latents.shape == shape
    too_weak = GenerationRequest(PROMPT, seed=0, steps=4, init_image=image, strength=0.1)
    with pytest.raises(EngineError, match="no denoising step"):
        img2img_latents(
            too_weak, make_scheduler("ddim", info.scheduler_config, 4), torch.Generator(), shape, torch_runtime
        )


def test_pixels_map_minus_one_to_one_onto_bytes_and_clamp() -> None:
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    pixels = to_pixels(images)
    assert pixels.shape == (1, 1, 5, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
