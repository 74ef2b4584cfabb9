"""Samplers are diffusers' schedulers, one instance per request (multistep samplers keep per-request state)."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# name -> (scheduler class, config overrides on top of the backbone's scheduler config)
SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
}


def make_scheduler(name: str, config: dict[str, Any], steps: int) -> SchedulerMixin:
    """A fresh scheduler for one request with its timesteps set (what the pipeline's __call__ does)."""
    try:
        cls, overrides = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None
    scheduler = cls.from_config(config, **overrides)
    scheduler.set_timesteps(steps)
    return scheduler


def step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator, eta: float) -> dict[str, Any]:
    """`eta` and `generator` for schedulers whose `step` takes them (the pipeline's prepare_extra_step_kwargs)."""
    params = _step_parameters(type(scheduler))
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


@cache
def _step_parameters(cls: type[SchedulerMixin]) -> frozenset[str]:
    """`step`'s parameter names, once per scheduler class: `inspect.signature` on every row's every step took
    about 2.4 ms of a 20-step request (BENCHMARKS.md, "Where the time goes")."""
    return frozenset(inspect.signature(cls.step).parameters)
