"""The tenant incarnation a request authenticated as (`Caller`) is the one its writes go to.

The race: a request authenticates, then its tenant is deleted and created again under the same name (perhaps
for another customer), then the request creates its job or stores its image. It must be refused like a
missing tenant and leave nothing in the new tenant's namespace. The app runs in-process (real LocalStore,
real engine over the tiny backbone); the interleaving is made deterministic by running the delete and the
re-creation right after the real authentication, inside the request, instead of hoping a timing hits it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request

from service.api.deps import State, authenticated
from service.settings import Settings
from service.stores import LocalStore
from service.stores.base import TenantRecord
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


async def race(model_dir: Path, data_dir: Path) -> None:
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
        new_key = store.create_tenant("fresh")
        body = {"prompt": PROMPT, "response_format": "url", **FAST}
        answer = await client.post("/v1/images/generations", json=body, headers={"Authorization": f"Bearer {new_key}"})
        assert answer.status_code == 200, answer.text
        assert len(written_for(data_dir, "fresh")) == 1


def test_a_write_after_the_tenant_was_created_again_is_refused_and_stores_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    asyncio.run(race(tiny_model_dir, tmp_path / "data"))
