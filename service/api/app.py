"""`create_app(settings)`: the FastAPI app. The store opens at startup; the model loads in the background
(runtime, engine thread, adapter cache, one warm-up generation; role "api": only what validation needs) while
`/livez` already answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from adapters import ExportLimits
from service.adapter_cache import AdapterCache
from service.admin_key import resolve_admin_key
from service.api.errors import install_error_handlers
from service.api.middleware import RequestContext
from service.api.routes import adapters, admin, health, images, jobs, playground
from service.api.state import ModelParts, ServiceState
from service.engine import Engine, EngineConfig, GenerationRequest
from service.instrumented_runtime import InstrumentedRuntime
from service.jobs import JobManager
from service.metrics import Metrics
from service.runner import Runner
from service.runtime import BackboneInfo, load_backbone_info, load_runtime
from service.settings import Settings
from service.stores import open_store
from service.stores.open import open_stream
from service.worker import StreamWorker

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 120.0  # accepted work finishes on shutdown; what does not is re-run by another replica
WARMUP_TIMEOUT_S = 600.0


def build_engine(settings: Settings, metrics: Metrics) -> Engine:
    """Blocking: loads the backbone (seconds to minutes) and starts the engine thread."""
    runtime = load_runtime(
        settings.backend,
        settings.model_dir,
        settings.export_dir,
        lora_rank=settings.engine.lora_rank,
        vpt_tokens=settings.engine.vpt_tokens,
        threads=settings.engine.threads,
        base_graphs=settings.engine.base_graphs,
        lora_graphs=settings.engine.lora_graphs,
    )
    config = EngineConfig(
        max_rows=settings.engine.max_rows,
        max_queue=settings.engine.max_queue,
        max_active=settings.engine.max_active,
        row_cache_bytes=settings.engine.row_cache_bytes,
        bank_cache_bytes=settings.engine.bank_cache_bytes,
        uncond_cache_bytes=settings.engine.uncond_cache_bytes,
        weights=settings.fairness.weights,
        # Synchronous requests are capped here; accepted jobs (`JobManager.start_stored`) enter uncapped, their
        # work having been checked when they were accepted (by the engine, or by the store with the job stream).
        max_tenant_work=settings.fairness.max_tenant_work,
    )
    engine = Engine(InstrumentedRuntime(runtime, metrics), config)
    # Read at scrape time: the engine thread owns these caches and needs no metrics of its own.
    metrics.packed_cache_bytes.labels("rows").set_function(lambda: engine.row_cache.bytes)
    metrics.packed_cache_bytes.labels("banks").set_function(lambda: engine.bank_cache.bytes)
    metrics.uncond_cache_bytes.set_function(lambda: engine.text.uncond_cache.bytes)
    engine.start()
    return engine


def validation_info(settings: Settings) -> BackboneInfo:
    """Blocking: role "api" validates requests and adapter uploads against the backbone and runs none of it, so
    it reads the backbone's shapes and fingerprint (the same the workers' runtime reports) without its weights."""
    return load_backbone_info(
        settings.backend,
        settings.model_dir,
        settings.export_dir,
        lora_rank=settings.engine.lora_rank,
        vpt_tokens=settings.engine.vpt_tokens,
    )


def warm_up(engine: Engine) -> None:
    """One tiny guided generation: the first real request then pays no lazy-initialization cost."""
    job = engine.submit(GenerationRequest("warm-up", seed=0, steps=1, tenant="", request_id="warm-up"))
    job.result(timeout=WARMUP_TIMEOUT_S)


async def load_model(state: ServiceState) -> None:
    settings = state.settings
    engine: Engine | None = None
    try:
        stream = await asyncio.to_thread(open_stream, settings, state.store)  # Redis: the job stream
        if settings.role == "api":
            info = await asyncio.to_thread(validation_info, settings)
        else:
            engine = await asyncio.to_thread(build_engine, settings, state.metrics)
            info = engine.info
            if settings.warmup:
                await asyncio.to_thread(warm_up, engine)
    except Exception as error:  # noqa: BLE001 - reported by /readyz and every model route
        log.exception("the model did not load")
        state.load_error = f"the model did not load ({type(error).__name__}: {error})"
        return
    limits = ExportLimits(max_lora_rank=info.lora_rank, max_vpt_tokens=info.vpt_tokens)
    cache = AdapterCache(state.store, info.spec, limits, settings.adapter_cache_bytes, state.metrics)
    runner = Runner(engine, state.metrics) if engine is not None else None
    largest = 4 * info.image_size  # the largest side a request may generate (GenerationRequest.validate)
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
    log.info("ready", extra={"backend": backend, "image_size": info.image_size})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = open_store(settings)
    admin_key = resolve_admin_key(settings) if settings.role != "worker" else ""  # a worker has no admin routes
    state = ServiceState(settings, store, app.state.metrics, admin_key)
    app.state.service = state
    loader = asyncio.create_task(load_model(state))
    try:
        yield
    finally:
        state.stopping = True  # /readyz turns 503 so a balancer stops sending work
        if not loader.done():
            await asyncio.wait({loader}, timeout=DRAIN_TIMEOUT_S)
        if state.model is not None:
            if state.model.worker is not None:  # stop taking jobs; running ones finish and are acknowledged
                await state.model.worker.drain(DRAIN_TIMEOUT_S)
            await state.model.jobs.stop(DRAIN_TIMEOUT_S)
            if state.model.engine is not None:
                await asyncio.to_thread(state.model.engine.stop, True, DRAIN_TIMEOUT_S)
            state.model.cache.close()
        store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="diffplex",
        summary="Multi-tenant text-to-image: one frozen backbone, per-tenant adapters per batch row.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    for module in (images, jobs, adapters, admin, health, playground):
        app.include_router(module.router)
    app.mount(playground.MOUNT_PATH, playground.static, name="playground")
    app.add_middleware(RequestContext, metrics=app.state.metrics, settings=settings)
    return app
