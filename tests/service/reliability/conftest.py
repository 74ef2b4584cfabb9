"""Servers for the reliability tests: real `diffplex serve` processes (tests/service/api/server.py), and
tenants on them. `shared_server` (cheap generations, small upload cap, no rate limit) serves the fuzz,
malicious-adapter and isolation tests; the overload, memory and Redis-outage tests start their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.api.conftest import spec  # noqa: F401 - the tiny backbone's spec, as the API tests use it
from tests.service.api.server import ADMIN_KEY, Server, running_server

MiB = 1 << 20
MAX_UPLOAD_BYTES = 2 * MiB  # adapter files: above a .pt with 4,100 members (1.15 MB), so the member cap refuses it
SHARED_ENV = {
    "DIFFPLEX_LIMITS__MAX_STEPS": "2",  # generated requests stay cheap: the fuzzer sends thousands
    "DIFFPLEX_LIMITS__MAX_N": "2",
    "DIFFPLEX_LIMITS__MAX_PROMPT_CHARS": "300",
    "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0",  # one tenant sends thousands of requests
    "DIFFPLEX_LIMITS__UPLOAD_RATE_PER_MINUTE": "0",  # and uploads the whole hostile-file catalogue
    "DIFFPLEX_LIMITS__MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),  # edit images
    "DIFFPLEX_LIMITS__MAX_ADAPTER_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    "DIFFPLEX_LIMITS__MAX_BODY_BYTES": str(256 * 1024),
}


def admin_client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)


def new_tenant(server: Server, prefix: str = "t") -> tuple[str, str]:
    """A new tenant, `prefix-<random>`: (its name, its API key)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with admin_client(server) as admin:
        response = admin.post("/v1/admin/tenants", json={"name": name})
    assert response.status_code == 201, response.text
    return name, response.json()["api_key"]


def client_for(server: Server, key: str, timeout: float = 120) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


@pytest.fixture(scope="session")
def shared_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("reliability"), **SHARED_ENV) as server:
        yield server


def data_dir(server: Server) -> Path:
    """The LocalStore directory of a server started by `running_server`."""
    return server.log_path.parent / "data"
