"""A submitted request: the caller's handle (`Job`), what it resolves to (`GenerationResult`), and the engine's
state for it while it is queued and denoising (`ActiveRequest`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from service.engine.request import GenerationRequest
from service.engine.step_cache import CachedFeature
from service.engine.text import TextConditioning

Progress = Callable[[int, int], None]  # (steps done, steps total)


@dataclass
class GenerationResult:
    image: np.ndarray  # uint8 [H, W, 3]
    seed: int
    timings: dict[str, float]


@dataclass
class ActiveRequest:
    """One request inside the engine: set up at admission (`Engine._prepare`), advanced one step per tick it
    is scheduled, resolved once."""

    request: GenerationRequest
    future: Future
    progress: Progress | None
    submitted: float
    cancelled: threading.Event
    scheduler: SchedulerMixin | None = None
    generator: torch.Generator | None = None
    latents: torch.Tensor | None = None
    cond: TextConditioning | None = None
    uncond: TextConditioning | None = None  # None: unguided
    time_ids: torch.Tensor | None = None  # SDXL's added time ids [1, 6]
    timesteps: list = field(default_factory=list)
    step: int = 0
    unet_key: str = ""
    uncond_pred: torch.Tensor | None = None  # cached for the uncond-refresh option
    features: dict[str, CachedFeature] = field(default_factory=dict)  # step caching: side -> its deep feature
    feature_bytes: int = 0  # what `features` may grow to (step_cache.py `feature_bytes`), set at submission
    reserved_bytes: int = 0  # of the engine's `step_cache_bytes`: `feature_bytes` while active, 0 before and after
    started: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    resolved: bool = False

    @property
    def tenant(self) -> str:
        return self.request.tenant

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape)

    @property
    def unet_rows(self) -> int:
        """U-Net rows it costs a tick: a guided request's cond and uncond rows, even outside its guidance
        interval, so its share of a tick does not change as it runs."""
        return 2 if self.request.guided else 1

    @property
    def work(self) -> int:
        """Images x steps it holds against its tenant's cap (img2img runs fewer: the requested steps bound it)."""
        return self.request.steps

    @property
    def done(self) -> bool:
        return self.step >= len(self.timesteps)

    def model_input(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net's sample and timestep [1] for the current step."""
        t = self.timesteps[self.step]
        sample = self.scheduler.scale_model_input(self.latents, t)
        return sample, torch.as_tensor(t, dtype=torch.float32).reshape(1)


class Job:
    """Handle of a submitted request: `future.result()` -> GenerationResult; `cancel()`."""

    def __init__(self, entry: ActiveRequest) -> None:
        self._entry = entry
        self.future: Future = entry.future
        self.request_id = entry.request.request_id

    def cancel(self) -> None:
        self._entry.cancelled.set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        return self.future.result(timeout)
