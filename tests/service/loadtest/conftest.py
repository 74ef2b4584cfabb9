"""A real `diffplex serve` over the tiny backbone for the end-to-end load tests, and a two-tenant workload
with real adapter files for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.service.api.adapter_files import lora_file, tiny_spec, vpt_file
from tests.service.api.server import Server

STEPS = 2


@pytest.fixture(scope="session")
def loadtest_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("loadtest-server")
    server = Server(tiny_model_dir, root / "data", root / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def workload_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workload")
    spec = tiny_spec(tiny_model_dir)
    (root / "lora.safetensors").write_bytes(lora_file(spec))
    (root / "vpt.safetensors").write_bytes(vpt_file(spec))
    workload = {
        "name": "e2e",
        "tenants": [
            {"name": "acme", "adapters": [{"name": "striped", "file": "lora.safetensors", "kind": "lora"}]},
            {"name": "globex", "adapters": [{"name": "tilted", "file": "vpt.safetensors", "kind": "vpt"}]},
        ],
        "requests": [
            {"name": "plain", "weight": 2, "prompts": ["a red circle", "a blue square"], "steps": STEPS},
            {
                "name": "lora",
                "tenants": ["acme"],
                "prompt": "a star",
                "steps": STEPS,
                "adapters": [{"name": "striped"}],
            },
            {
                "name": "vpt",
                "tenants": ["globex"],
                "prompt": "a dot",
                "steps": STEPS,
                "n": 2,
                "adapters": [{"name": "tilted"}],
            },
        ],
    }
    path = root / "workload.yaml"
    path.write_text(yaml.safe_dump(workload, sort_keys=False))
    return path
