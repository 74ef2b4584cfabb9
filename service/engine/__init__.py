"""Continuous batching sampler with fused CFG, cached unconditional embeddings and per-row adapters."""

from service.engine.engine import Engine
from service.engine.errors import Cancelled, EngineError, QueueFull, TenantBusy
from service.engine.job import GenerationResult, Job
from service.engine.request import GenerationRequest
from service.engine.samplers import SAMPLERS

__all__ = [
    "SAMPLERS",
    "Cancelled",
    "Engine",
    "EngineError",
    "GenerationRequest",
    "GenerationResult",
    "Job",
    "QueueFull",
    "TenantBusy",
]
