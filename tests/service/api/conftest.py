"""One embedded-mode server for the API tests (started once: loading and warming the model is the slow part),
tenants on it, and httpx clients with their keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.spec import BackboneSpec
from tests.service.api.adapter_files import tiny_spec
from tests.service.api.server import ADMIN_KEY, Server

RATE_PER_MINUTE = 40
MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    process = Server(
        tiny_model_dir,
        root / "data",
        root / "server.log",
        DIFFPLEX_LIMITS__RATE_PER_MINUTE=str(RATE_PER_MINUTE),
        DIFFPLEX_LIMITS__MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        DIFFPLEX_LIMITS__MAX_ADAPTERS_PER_TENANT="4",
        DIFFPLEX_LIMITS__MAX_N="4",
        DIFFPLEX_LIMITS__MAX_STEPS="200",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def spec(tiny_model_dir: Path) -> BackboneSpec:
    return tiny_spec(tiny_model_dir)


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120) as c:
        yield c


def make_tenant(admin: httpx.Client, server: Server) -> httpx.Client:
    name = f"t-{uuid.uuid4().hex[:10]}"
    response = admin.post("/v1/admin/tenants", json={"name": name})
    assert response.status_code == 201, response.text
    key = response.json()["api_key"]
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    client.tenant = name  # type: ignore[attr-defined]
    client.api_key = key  # type: ignore[attr-defined]
    return client


@pytest.fixture
def alice(admin: httpx.Client, server: Server) -> Iterator[httpx.Client]:
    client = make_tenant(admin, server)
    yield client
    client.close()


@pytest.fixture
def bob(admin: httpx.Client, server: Server) -> Iterator[httpx.Client]:
    client = make_tenant(admin, server)
    yield client
    client.close()
