"""An app running in this process: its lifespan started, its model (role "api": its validation info) loaded in
the background as under `diffplex serve`, and an httpx client talking to it without a socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from service.api import create_app
from service.boot.state import ServiceState
from service.core.settings import Settings

LOAD_TIMEOUT_S = 240.0


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: ServiceState = app.state.service
        deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_S
        while state.model is None:
            assert state.load_error is None, state.load_error
            assert asyncio.get_running_loop().time() < deadline, "the model did not load"
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://diffplex.test", timeout=120) as client:
            yield app, client
