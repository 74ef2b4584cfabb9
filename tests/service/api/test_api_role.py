"""An API replica of role "api" validates every request exactly like role "all" (the same status and error body
for bad sizes, unknown adapters, adapters of another backbone, and the same acceptance of good ones) while its
state reaches no model weights: no module parameter, no ONNX Runtime session. Both apps run in-process over the
tiny backbone, with the PyTorch backend on its pipeline and with ONNX Runtime on its export; role "api" on the
real Redis (DB 13, a unique key prefix deleted afterwards), role "all" on a LocalStore."""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import types
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis
import torch
from PIL import Image

from adapters import vpt_to_bytes
from adapters.spec import BackboneSpec
from export.manifest import Manifest
from service.boot.state import ServiceState
from service.core.settings import Settings
from tests.adapters.builders import safetensors_bytes
from tests.service.api.adapter_files import ti_file, vpt_file
from tests.service.api.in_process import in_process
from tests.service.api.server import ADMIN_KEY
from tests.service.engine.helpers import random_vpt

REDIS_URL = "redis://127.0.0.1:6379/13"
BODY = {"prompt": "a red circle <tok>", "steps": 2, "size": "16x16"}  # <tok>: the tenant's embedding, once uploaded
GENERATIONS = "/v1/images/generations"


def png(height: int, width: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


def answer(response: httpx.Response) -> tuple[int, Any]:
    """What a client sees of a refusal (status and error body), or of an acceptance (status only)."""
    return response.status_code, response.json().get("error") if response.status_code >= 400 else None


async def validations(client: httpx.AsyncClient, spec: BackboneSpec) -> list[tuple[int, Any]]:
    """The same calls in the same order on a fresh tenant: uploads checked against the backbone's spec and
    limits, requests against its sizes and the tenant's adapters, a good job accepted."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = await client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin)
    client.headers["Authorization"] = f"Bearer {created.json()['api_key']}"

    async def upload(name: str, data: bytes) -> tuple[int, Any]:
        return answer(await client.put(f"/v1/adapters/{name}", files={"file": (f"{name}.safetensors", data)}))

    async def post(path: str, **body: Any) -> tuple[int, Any]:
        return answer(await client.post(path, json={**BODY, **body}))

    async def edit(image: bytes) -> tuple[int, Any]:
        files = {"image": ("in.png", image)}
        return answer(await client.post("/v1/images/edits", files=files, data={"prompt": "a circle"}))

    foreign_vpt = replace(random_vpt(spec, 7), backbone_fingerprint="f" * 64)
    return [
        await upload("foreign", vpt_to_bytes(foreign_vpt)),  # trained on another backbone
        await upload("wide", safetensors_bytes({"<w>": torch.randn(2, spec.token_embedding_dim + 8)})),
        await upload("long", vpt_to_bytes(random_vpt(spec, 8, tokens=4))),  # more tokens than the banks' P
        await upload("deep", vpt_file(spec)),
        await upload("tok", ti_file(spec, "<tok>")),
        await post(GENERATIONS, size="17x16"),
        await post(GENERATIONS, size="128x128"),
        await post(GENERATIONS, adapters=[{"name": "nope"}]),
        await edit(png(15, 16)),
        await post("/v1/jobs", size="18x16"),
        await post("/v1/jobs", adapters=[{"name": "deep", "weight": 0.5}], seed=1),
    ]


def reachable(root: object) -> Iterator[object]:
    """Everything `root` refers to, transitively, except through modules, classes and functions (whose globals
    reach the whole process): the objects this app's state keeps alive."""
    module_dicts = {id(getattr(m, "__dict__", None)) for m in list(sys.modules.values())}
    opaque = (types.ModuleType, type, types.FunctionType, types.FrameType)
    seen, stack = {id(root)}, [root]
    while stack:
        obj = stack.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and id(ref) not in module_dicts and not isinstance(ref, opaque):
                seen.add(id(ref))
                stack.append(ref)


def weights_held(state: ServiceState) -> Counter[str]:
    held: Counter[str] = Counter()
    for obj in reachable(state):
        if isinstance(obj, torch.nn.Parameter) and not obj.is_meta:
            held["parameters"] += 1
        elif isinstance(obj, ort.InferenceSession):
            held["onnxruntime sessions"] += 1
    return held


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


async def validate_as(settings: Settings, spec: BackboneSpec) -> tuple[list[tuple[int, Any]], Counter[str]]:
    async with in_process(settings) as (app, client):
        return await validations(client, spec), weights_held(app.state.service)


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_role_api_validates_like_role_all_without_holding_weights(
    backend: str,
    tiny_model_dir: Path,
    tiny_export: tuple[Path, Manifest],
    spec: BackboneSpec,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    common = Settings(
        backend=backend,
        model_dir=tiny_model_dir,
        export_dir=tiny_export[0] if backend == "onnxruntime" else None,
        admin_key=ADMIN_KEY,
        warmup=False,
        engine={"lora_rank": 4, "vpt_tokens": 3, "threads": 1},
    )
    everything = common.model_copy(update={"role": "all", "redis_url": None, "data_dir": tmp_path / "all"})
    api_only = common.model_copy(
        update={"role": "api", "redis_url": REDIS_URL, "redis_prefix": redis_prefix, "data_dir": tmp_path / "api"}
    )
    on_all, held_by_all = asyncio.run(validate_as(everything, spec))
    on_api, held_by_api = asyncio.run(validate_as(api_only, spec))

    assert [status for status, _ in on_all] == [400, 400, 400, 201, 201, 400, 400, 404, 400, 400, 202]
    foreign = on_all[0][1]["message"]
    assert foreign.startswith(f"the VPT was trained on backbone ffffffffffff, this server runs {spec.fingerprint[:12]}")
    assert on_api == on_all
    assert held_by_all["onnxruntime sessions" if backend == "onnxruntime" else "parameters"] > 0  # the check sees them
    assert held_by_api == Counter()
