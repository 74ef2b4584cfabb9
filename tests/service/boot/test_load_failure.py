"""A model that cannot load fails loudly: `diffplex serve` exits non-zero with the reason, or (keep-serving)
answers 503 with the reason on `/livez` and the model routes, with no Retry-After that promises success."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.service.api.server import ADMIN_KEY, Server
from tests.service.api.test_images import FAST, assert_error
from tests.service.worker.cluster import REDIS_URL, Worker

EXIT_TIMEOUT_S = 120.0
REASON = "no file named diffusion_pytorch_model.bin"  # diffusers' own words for a U-Net without weights


@pytest.fixture(scope="module")
def unloadable_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline directory that passes the start-up check (model_index.json) but whose U-Net has no weights."""
    broken = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("unloadable") / "pipeline")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return broken


def test_serve_exits_non_zero_with_the_reason(unloadable_dir: Path, tmp_path: Path) -> None:
    server = Server(unloadable_dir, tmp_path / "data", tmp_path / "server.log")
    try:
        status = server.process.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        server.stop()
    logs = server.logs()
    assert status == 1, logs
    assert REASON in logs and "DIFFPLEX_MODEL_DIR" in logs, logs
    # The last line is the command's own, plain: what an operator reads first in `kubectl logs`.
    assert logs.strip().splitlines()[-1].startswith("diffplex serve: the model did not load (ExportError"), logs


def test_keep_serving_answers_503_with_the_reason(unloadable_dir: Path, tmp_path: Path) -> None:
    server = Server(unloadable_dir, tmp_path / "data", tmp_path / "server.log", DIFFPLEX_EXIT_ON_LOAD_ERROR="false")
    try:
        livez = wait_for_livez_503(server)
        error = assert_error(livez, 503, REASON, "DIFFPLEX_MODEL_DIR")
        assert error["code"] == "model_load_failed"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            created = client.post(
                "/v1/admin/tenants", json={"name": "acme"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert created.status_code == 201, created.text
            key = created.json()["api_key"]
            generated = client.post(
                "/v1/images/generations",
                json={"prompt": "a red circle", **FAST},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert assert_error(generated, 503, REASON)["code"] == "model_load_failed"
        assert "retry-after" not in generated.headers  # a retry fails the same way
        assert server.process.poll() is None  # still serving, as asked
    finally:
        server.stop()
    # `serve` re-raises SIGTERM after its graceful shutdown (uvicorn's way): never the 0 of a healthy stop.
    assert server.process.returncode != 0


def wait_for_livez_503(server: Server) -> httpx.Response:
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.logs()
        try:
            response = httpx.get(f"{server.url}/livez", timeout=2)
            if response.status_code != 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"/livez still answered 200 after {EXIT_TIMEOUT_S}s:\n{server.logs()}")


def test_worker_exits_non_zero_with_the_reason(unloadable_dir: Path, tmp_path: Path) -> None:
    """`diffplex worker` takes the same path: on a model it cannot load it stops taking jobs and exits 1, saying
    why, instead of holding its stream group membership with no engine behind it."""
    worker = Worker(
        unloadable_dir,
        tmp_path / "data",
        tmp_path / "worker.log",
        DIFFPLEX_REDIS_URL=REDIS_URL,
        DIFFPLEX_REDIS_PREFIX=f"load-failure-{tmp_path.name}:",
        DIFFPLEX_ADMIN_KEY=ADMIN_KEY,
    )
    try:
        status = worker.process.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        worker.stop()
    logs = worker.logs()
    assert status == 1, logs
    assert REASON in logs and "DIFFPLEX_MODEL_DIR" in logs, logs
    assert logs.strip().splitlines()[-1].startswith("diffplex worker: the model did not load (ExportError"), logs
