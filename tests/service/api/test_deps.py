"""The tenant incarnation a request authenticated as (`Caller`) is the one its writes and reads go to.

The race: a request authenticates, then its tenant is deleted and created again under the same name (perhaps
for another customer), then the request creates its job, stores its image, uploads or deletes an adapter,
or generates with one. It must be refused like a missing tenant (or a missing adapter), leave nothing in
the new tenant's namespace and take nothing from it. The app runs in-process (real LocalStore,
real engine over the tiny backbone); the interleaving is made deterministic by running the delete and the
re-creation right after the real authentication, inside the request, instead of hoping a timing hits it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request

from adapters.spec import BackboneSpec
from service.api.deps import State, authenticated
from service.core.settings import Settings
from service.stores import LocalStore
from service.stores.base import Quota, TenantRecord
from tests.service.api.adapter_files import lora_file
from tests.service.api.in_process import in_process
from tests.service.api.server import ADMIN_KEY
from tests.service.api.test_images import FAST, assert_error

PROMPT = "a red circle on a blue background"


@asynccontextmanager
async def serving(model_dir: Path, data_dir: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running and its model loaded, and a client talking to it in-process."""
    settings = Settings(
        model_dir=model_dir,
        data_dir=data_dir,
        redis_url=None,
        admin_key=ADMIN_KEY,
        warmup=False,
        engine={"lora_rank": 4, "vpt_tokens": 3, "threads": 1},
    )
    async with in_process(settings) as (app, client):
        yield app, client


async def recreated_after_authentication(request: Request, state: State) -> TenantRecord:
    """The real authentication; then, before the route writes anything, an admin deletes the tenant and
    creates it again under the same name."""
    caller = await authenticated(request, state)
    assert state.store.delete_tenant(caller.name)
    state.store.create_tenant(caller.name)
    return caller


def written_for(data_dir: Path, tenant: str) -> list[str]:
    """The tenant's job records and generated files on disk (any incarnation)."""
    found = [*(data_dir / "jobs" / tenant).rglob("*"), *(data_dir / "files" / tenant).rglob("*")]
    return sorted(str(p.relative_to(data_dir)) for p in found if p.is_file())


async def adapter_race(app: FastAPI, client: httpx.AsyncClient, store: LocalStore, spec: BackboneSpec) -> None:
    """Upload, delete and use an adapter as the old incarnation, once the name has a new one that owns an
    adapter called "style": each is refused, and the new tenant's adapter is untouched and unused."""
    data = lora_file(spec)
    donor = {"Authorization": f"Bearer {store.create_tenant('donor')}"}
    uploaded = await client.put("/v1/adapters/style", files={"file": ("s.safetensors", data)}, headers=donor)
    assert uploaded.status_code == 201, uploaded.text
    style = store.get_adapter("donor", "style")
    assert style is not None
    calls = {
        "upload": lambda h: client.put("/v1/adapters/mine", files={"file": ("m.safetensors", data)}, headers=h),
        "delete": lambda h: client.delete("/v1/adapters/style", headers=h),
        "use": lambda h: client.post(
            "/v1/images/generations", json={"prompt": f"{PROMPT} <lora:style:1>", **FAST}, headers=h
        ),
    }
    for name, call in calls.items():
        tenant = f"adapters-{name}"
        old_key = store.create_tenant(tenant)

        async def recreated_with_style(request: Request, state: State, tenant: str = tenant) -> TenantRecord:
            caller = await recreated_after_authentication(request, state)
            new = state.store.get_tenant(tenant)
            assert new is not None
            state.store.put_adapter(tenant, style, data, Quota(max_count=8, max_bytes=1 << 30), new.epoch)
            return caller

        app.dependency_overrides[authenticated] = recreated_with_style
        response = await call({"Authorization": f"Bearer {old_key}"})
        app.dependency_overrides.clear()
        error = assert_error(response, 404)
        wanted = "adapter 'style' not found" if name == "use" else f"tenant {tenant!r} does not exist"
        assert wanted in error["message"], (name, error)
        assert [m.name for m in store.list_adapters(tenant)] == ["style"], name  # the new tenant's, alone
        assert written_for(store.root, tenant) == [], name


async def race(model_dir: Path, data_dir: Path, spec: BackboneSpec) -> None:
    store = LocalStore(data_dir)
    async with serving(model_dir, data_dir) as (app, client):
        requests = {
            "job": ("/v1/jobs", {"prompt": PROMPT, **FAST}),
            "generation": ("/v1/images/generations", {"prompt": PROMPT, "response_format": "url", **FAST}),
        }
        app.dependency_overrides[authenticated] = recreated_after_authentication
        for name, (path, body) in requests.items():
            old_key = store.create_tenant(name)
            old = store.get_tenant(name)
            response = await client.post(path, json=body, headers={"Authorization": f"Bearer {old_key}"})
            error = assert_error(response, 404)
            assert error["message"] == f"tenant {name!r} does not exist" and error["code"] == "not_found", name
            new = store.get_tenant(name)
            assert old is not None and new is not None and new.epoch != old.epoch  # the race did happen
            assert written_for(data_dir, name) == [], name  # nothing in the new tenant's namespace

        app.dependency_overrides.clear()  # the new tenant works as usual, and its files land where looked for
        await adapter_race(app, client, store, spec)
        new_key = store.create_tenant("fresh")
        body = {"prompt": PROMPT, "response_format": "url", **FAST}
        answer = await client.post("/v1/images/generations", json=body, headers={"Authorization": f"Bearer {new_key}"})
        assert answer.status_code == 200, answer.text
        assert len(written_for(data_dir, "fresh")) == 1


def test_a_write_after_the_tenant_was_created_again_is_refused_and_stores_nothing(
    tiny_model_dir: Path, tmp_path: Path, spec: BackboneSpec
) -> None:
    asyncio.run(race(tiny_model_dir, tmp_path / "data", spec))
