"""The real service (FastAPI app, uvicorn, store, adapter cache, engine) on a loopback port in this process,
for benchmarks that go through HTTP but also want to reach the engine's objects."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from service.api.app import create_app
from service.boot.state import ServiceState
from service.core.settings import EngineSettings, Limits, Settings

ADMIN_KEY = "bench-admin-key-0123456789"
READY_TIMEOUT_S = 600.0


@dataclass
class LiveServer:
    url: str
    state: ServiceState

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def create_tenant(self, client: httpx.Client, name: str) -> dict[str, str]:
        """The tenant's auth header."""
        response = client.post("/v1/admin/tenants", json={"name": name}, headers=self.admin())
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['api_key']}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(
    model_dir: Path,
    data_dir: Path,
    backend: str = "pytorch",
    export_dir: Path | None = None,
    threads: int | None = None,
    cache_bytes: int | None = None,
) -> Iterator[LiveServer]:
    overrides = {"adapter_cache_bytes": cache_bytes} if cache_bytes else {}
    settings = Settings(
        model_dir=model_dir,
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        backend=backend,
        export_dir=export_dir,
        port=_free_port(),
        log_level="WARNING",
        limits=Limits(rate_per_minute=0, max_adapters_per_tenant=10_000),
        engine=EngineSettings(threads=threads),
        **overrides,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the in-process server did not become ready at {url}")
            time.sleep(0.2)
        yield LiveServer(url, app.state.service)
    finally:
        server.should_exit = True
        thread.join(timeout=180)
