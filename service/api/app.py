"""`create_app(settings)`: the public HTTP API (OpenAI-compatible images, jobs, adapters, tenants, the
playground) over the shared lifespan (service/boot/)."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.middleware import RequestContext
from service.api.routes import adapters, admin, files, images, jobs, playground
from service.boot import probes
from service.boot.lifespan import lifespan
from service.core.error_handlers import install_error_handlers
from service.core.metrics import Metrics
from service.core.settings import Settings


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
    for module in (images, jobs, adapters, admin, files, probes, playground):
        app.include_router(module.router)
    app.mount(playground.MOUNT_PATH, playground.static, name="playground")
    app.add_middleware(RequestContext, metrics=app.state.metrics, settings=settings)
    return app
