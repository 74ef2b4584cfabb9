"""Loading the model, in the background of a starting server (`diffplex serve` or `diffplex worker`): the
runtime and the engine thread (role "api": only the backbone's shapes, for validation), the adapter cache, the
job manager and the stream worker, then one warm-up generation. Until it ends `/livez` answers and the model
routes answer 503."""

from __future__ import annotations

import asyncio
import logging

from adapters import ExportLimits
from service.boot.banner import announce_ready
from service.boot.model_source import served_model_dir
from service.boot.state import ModelParts, ServiceState
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.engine import Engine, GenerationRequest
from service.engine.request import max_side
from service.generation.runner import Runner
from service.hotload.cache import AdapterCache
from service.jobs.manager import JobManager
from service.runtime import BackboneInfo, load_backbone_info, load_runtime
from service.runtime.instrumented import InstrumentedRuntime
from service.stores.open import open_stream
from service.worker import StreamWorker

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 600.0


def build_engine(settings: Settings, metrics: Metrics) -> Engine:
    """Blocking: loads the backbone (seconds to minutes; a single file is converted first, once) and starts the
    engine thread."""
    runtime = load_runtime(
        settings.backend,
        served_model_dir(settings),
        settings.export_dir,
        lora_rank=settings.engine.lora_rank,
        vpt_tokens=settings.engine.vpt_tokens,
        threads=settings.engine.threads,
        base_graphs=settings.engine.base_graphs,
        lora_graphs=settings.engine.lora_graphs,
        model_variant=settings.model_variant,
    )
    # Synchronous requests are capped by `settings.fairness`; accepted jobs (`JobManager.start_stored`) enter
    # uncapped, their work having been checked when they were accepted (by the engine, or by the store with the
    # job stream).
    engine = Engine(InstrumentedRuntime(runtime, metrics), settings.engine, settings.fairness)
    # Read at scrape time: the engine thread owns these caches and needs no metrics of its own.
    metrics.packed_cache_bytes.labels("rows").set_function(lambda: engine.row_cache.bytes)
    metrics.packed_cache_bytes.labels("banks").set_function(lambda: engine.model.bank_cache.bytes)
    metrics.uncond_cache_bytes.set_function(lambda: engine.text.uncond_cache.bytes)
    engine.start()
    return engine


def validation_info(settings: Settings) -> BackboneInfo:
    """Blocking: role "api" validates requests and adapter uploads against the backbone and runs none of it, so
    it reads the backbone's shapes and fingerprint (the same the workers' runtime reports) without its weights
    (from the same directory: a single file converted as the workers convert it)."""
    return load_backbone_info(
        settings.backend,
        served_model_dir(settings),
        settings.export_dir,
        lora_rank=settings.engine.lora_rank,
        vpt_tokens=settings.engine.vpt_tokens,
        model_variant=settings.model_variant,
    )


def warm_up(engine: Engine) -> None:
    """One tiny guided generation: the first real request then pays no lazy-initialization cost."""
    job = engine.submit(GenerationRequest("warm-up", seed=0, steps=1, tenant="", request_id="warm-up"))
    job.result(timeout=WARMUP_TIMEOUT_S)


def load_error_message(settings: Settings, error: Exception) -> str:
    """What /livez, the model routes and the exit say: the underlying error, and what to change. A load that
    failed once fails again the same way: only a fix and a restart help, so nothing here says "retry"."""
    where = settings.export_dir if settings.backend != "pytorch" else settings.model_dir
    setting = "DIFFPLEX_EXPORT_DIR" if settings.backend != "pytorch" else "DIFFPLEX_MODEL_DIR"
    return (
        f"the model did not load ({type(error).__name__}: {error}): fix the {settings.backend} model at {where} "
        f"({setting}) and restart"
    )


async def load_model(state: ServiceState) -> None:
    settings = state.settings
    engine: Engine | None = None
    try:
        stream = await asyncio.to_thread(open_stream, settings, state.store)  # Redis: the job stream
    except Exception as error:
        state.load_error = (
            f"the job stream did not open ({type(error).__name__}: {error}): check that Redis answers at "
            "DIFFPLEX_REDIS_URL and restart"
        )
        log.exception("the job stream did not open", extra={"reason": state.load_error})
        return
    try:
        if settings.role == "api":
            info = await asyncio.to_thread(validation_info, settings)
        else:
            engine = await asyncio.to_thread(build_engine, settings, state.metrics)
            info = engine.info
            if settings.warmup:
                await asyncio.to_thread(warm_up, engine)
    except Exception as error:
        state.load_error = load_error_message(settings, error)
        log.exception("the model did not load", extra={"reason": state.load_error})
        return
    rank_setting = (
        "DIFFPLEX_ENGINE__LORA_RANK"
        if settings.backend == "pytorch"
        else "`diffplex export --lora-rank N`, then serve the new export"
    )
    limits = ExportLimits(max_lora_rank=info.lora_rank, max_vpt_tokens=info.vpt_tokens, rank_setting=rank_setting)
    cache = AdapterCache(state.store, info.spec, limits, settings.adapter_cache_bytes, state.metrics)
    runner = Runner(engine, state.metrics) if engine is not None else None
    largest = max_side(info.image_size)  # the largest side a request may generate
    job_manager = JobManager(
        state.store, runner, state.plan, settings, stream, settings.worker.consumer, max_image_side=largest
    )
    job_manager.start(recover=stream is None)
    worker = StreamWorker(job_manager, stream, engine, settings) if stream is not None and engine is not None else None
    if worker is not None:
        worker.start()
    state.model = ModelParts(
        info=info, cache=cache, jobs=job_manager, limits=limits, engine=engine, runner=runner, worker=worker
    )
    backend = engine.runtime.name if engine is not None else f"{settings.backend} (validation only)"
    announce_ready(settings, backend, info.image_size, log)
