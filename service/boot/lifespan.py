"""The lifespan of a server process: the store opens at start-up, the model loads in the background
(boot/model.py) while `/livez` already answers, and shutdown drains accepted work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.boot.model import load_model
from service.boot.run import stop_on_load_error
from service.boot.state import ServiceState
from service.core.settings import Settings
from service.stores import open_store
from service.tenants.admin_key import resolve_admin_key

DRAIN_TIMEOUT_S = 120.0  # accepted work finishes on shutdown; what does not is re-run by another replica


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = open_store(settings)
    admin_key = resolve_admin_key(settings) if settings.role != "worker" else ""  # a worker has no admin routes
    state = ServiceState(settings, store, app.state.metrics, admin_key)
    app.state.service = state
    loader = asyncio.create_task(load_model(state))
    loader.add_done_callback(lambda _: stop_on_load_error(app, state))
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
