"""The same service over the ONNX Runtime backend (the tiny model's export): generation with an uploaded
LoRA and VPT, R and P read from the export's manifest."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from adapters.spec import BackboneSpec
from export.manifest import Manifest
from tests.service.api.adapter_files import lora_file, vpt_file
from tests.service.api.server import ADMIN_KEY, Server
from tests.service.api.test_adapters import PROMPT, image
from tests.service.api.test_images import FAST


def test_generation_with_adapters_on_onnxruntime(
    tiny_model_dir: Path, tiny_export: tuple[Path, Manifest], spec: BackboneSpec, tmp_path: Path
) -> None:
    server = Server(
        tiny_model_dir,
        tmp_path / "data",
        tmp_path / "server.log",
        DIFFPLEX_BACKEND="onnxruntime",
        DIFFPLEX_EXPORT_DIR=str(tiny_export[0]),
    )
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/readyz").json()["backend"].startswith("onnxruntime")
        admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        key = admin.post("/v1/admin/tenants", json={"name": "acme"}).json()["api_key"]
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        body = {"prompt": PROMPT, "seed": 3, **FAST}
        base = image(client.post("/v1/images/generations", json=body))
        for name, data in (("style", lora_file(spec)), ("night", vpt_file(spec))):
            uploaded = client.put(f"/v1/adapters/{name}", files={"file": (f"{name}.safetensors", data)})
            assert uploaded.status_code == 201, uploaded.text
            adapted = image(client.post("/v1/images/generations", json={**body, "adapters": [{"name": name}]}))
            assert not np.array_equal(adapted, base)
            # Step caching on the export's shallow graphs, with the adapter on the steps it runs.
            cached = client.post(
                "/v1/images/generations", json={**body, "adapters": [{"name": name}], "cache_interval": 2}
            )
            assert cached.status_code == 200, cached.text
    finally:
        server.stop()
