"""A request's starting latents and timesteps, and decoded images as pixels: diffusers' `prepare_latents` and
`decode_latents`, one request at a time (the engine batches the VAE calls around them)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from service.engine.errors import EngineError
from service.engine.noise import initial_noise
from service.engine.request import GenerationRequest
from service.runtime.base import BackboneInfo, Runtime


def latent_shape(request: GenerationRequest, info: BackboneInfo) -> tuple[int, ...]:
    """[1, C, h, w] for the request's size (the backbone's native size where it gives none)."""
    height, width = request.height or info.image_size, request.width or info.image_size
    factor = info.vae_scale_factor
    return (1, info.latent_channels, height // factor, width // factor)


def txt2img_latents(
    request: GenerationRequest, scheduler: SchedulerMixin, generator: torch.Generator, shape: tuple[int, ...]
) -> tuple[torch.Tensor, list]:
    """The request's noise, scaled to the scheduler's first sigma; every timestep is run."""
    noise = initial_noise(shape, generator, request.variation_seed, request.variation_strength)
    return noise * scheduler.init_noise_sigma, list(scheduler.timesteps)


def img2img_latents(
    request: GenerationRequest,
    scheduler: SchedulerMixin,
    generator: torch.Generator,
    shape: tuple[int, ...],
    runtime: Runtime,
) -> tuple[torch.Tensor, list]:
    """diffusers' img2img: encode, draw the latent, skip the first (1 - strength) of the trajectory, re-noise."""
    pixels = torch.from_numpy(request.init_image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    mean, logvar = runtime.vae_encode(pixels).chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    drawn = mean + std * torch.randn(mean.shape, generator=generator, dtype=torch.float32)
    init = drawn * runtime.info.scaling_factor
    steps = request.steps
    start = max(steps - min(int(steps * request.strength), steps), 0)
    order = getattr(scheduler, "order", 1)
    timesteps = list(scheduler.timesteps)[start * order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * order)
    if not timesteps:
        raise EngineError(f"strength {request.strength} with {steps} steps leaves no denoising step: raise either")
    noise = initial_noise(shape, generator, request.variation_seed, request.variation_strength)
    return scheduler.add_noise(init, noise, torch.as_tensor(timesteps[:1])), timesteps


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Decoded images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    return ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
