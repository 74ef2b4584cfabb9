"""Tenant isolation: tenant B against every adapter, job and file endpoint of tenant A, by name and by id.
Each answer must be exactly the answer for a resource that does not exist (same status, same body apart
from the name), so B learns nothing about A; nothing of A's changes. And every tenant route refuses a
missing, wrong, malformed or revoked key (a deleted tenant's) with the same 401.

A tenant deleted and created again under the same name (another customer, perhaps) sees nothing of the
deleted one: its jobs and files answer like missing ones, and with workers on Redis, the deleted tenant's
jobs still queued or running at the delete are dropped without writing anything."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from adapters.spec import BackboneSpec
from tests.service.api.adapter_files import lora_file, ti_file, vpt_file
from tests.service.api.server import ADMIN_KEY, Server
from tests.service.api.test_images import FAST, assert_error
from tests.service.api.test_jobs import wait_terminal
from tests.service.reliability.conftest import admin_client, client_for, data_dir, new_tenant
from tests.service.reliability.figures import record
from tests.service.worker.cluster import Cluster, event_time, running_cluster

PROMPT = "a red circle on a blue background"
ADAPTERS = {"style": "lora", "night": "vpt", "star": "textual_inversion"}  # A's adapters, by name
MISSING_NAME, MISSING_JOB, MISSING_FILE = "nosuchname", "job_000000000000000000000000", "img_0000000000000000"


@dataclass
class Owner:
    """Tenant A and what it owns."""

    client: httpx.Client
    job_id: str
    file_id: str
    adapter_sha: dict[str, str]


def png16() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def owner(shared_server: Server, spec: BackboneSpec) -> Iterator[Owner]:
    _, key = new_tenant(shared_server, "alice")
    with client_for(shared_server, key) as a:
        files = {"style": lora_file(spec), "night": vpt_file(spec), "star": ti_file(spec, "<star>")}
        for name, data in files.items():
            response = a.put(f"/v1/adapters/{name}", files={"file": (f"{name}.safetensors", data)})
            assert response.status_code == 201, response.text
        job = a.post("/v1/jobs", json={"prompt": PROMPT, **FAST})
        assert job.status_code == 202, job.text
        image = a.post("/v1/images/generations", json={"prompt": PROMPT, "response_format": "url", **FAST})
        assert image.status_code == 200, image.text
        file_id = image.json()["data"][0]["url"].rsplit("/", 1)[1].removesuffix(".png")
        shas = {m["name"]: m["sha256"] for m in a.get("/v1/adapters").json()["data"]}
        yield Owner(a, job.json()["id"], file_id, shas)


@pytest.fixture
def intruder(shared_server: Server) -> Iterator[httpx.Client]:
    _, key = new_tenant(shared_server, "bob")
    with client_for(shared_server, key) as b:
        yield b


# What B can try against a named or identified resource: (label, request given the name or id).
Probe = Callable[[httpx.Client, str], httpx.Response]
BY_NAME: dict[str, Probe] = {
    "GET adapter": lambda c, n: c.get(f"/v1/adapters/{n}"),
    "DELETE adapter": lambda c, n: c.delete(f"/v1/adapters/{n}"),
    "generation, adapters field": lambda c, n: c.post(
        "/v1/images/generations", json={"prompt": PROMPT, "adapters": [{"name": n}], **FAST}
    ),
    "generation, <lora:> tag": lambda c, n: c.post(
        "/v1/images/generations", json={"prompt": f"{PROMPT} <lora:{n}:0.8>", **FAST}
    ),
    "generation, <vpt:> tag": lambda c, n: c.post(
        "/v1/images/generations", json={"prompt": f"{PROMPT} <vpt:{n}>", **FAST}
    ),
    "job, adapters field": lambda c, n: c.post("/v1/jobs", json={"prompt": PROMPT, "adapters": [{"name": n}], **FAST}),
    "edit, adapters field": lambda c, n: c.post(
        "/v1/images/edits",
        files={"image": ("in.png", png16(), "image/png")},
        data={"prompt": PROMPT, "adapters": json.dumps([{"name": n}]), "steps": "2"},
    ),
}
BY_JOB_ID: dict[str, Probe] = {
    "GET job": lambda c, i: c.get(f"/v1/jobs/{i}"),
    "DELETE job": lambda c, i: c.delete(f"/v1/jobs/{i}"),
    "GET job events": lambda c, i: c.get(f"/v1/jobs/{i}/events"),
}
BY_FILE_ID: dict[str, Probe] = {"GET file": lambda c, i: c.get(f"/v1/files/{i}.png")}


def answer(response: httpx.Response, name: str) -> tuple[int, dict, str | None]:
    """Status, body with the probed name or id replaced, and Retry-After: what B can tell apart."""
    body = json.loads(response.text.replace(name, "<NAME>"))
    return response.status_code, body, response.headers.get("retry-after")


def assert_same_as_missing(client: httpx.Client, probe: Probe, theirs: str, missing: str) -> None:
    other, absent = probe(client, theirs), probe(client, missing)
    assert other.status_code == 404, other.text
    assert_error(other, 404, "not found")
    assert answer(other, theirs) == answer(absent, missing)


@pytest.mark.parametrize("label", list(BY_NAME))
@pytest.mark.parametrize("name", list(ADAPTERS))
def test_another_tenants_adapter_answers_like_a_missing_one(
    owner: Owner, intruder: httpx.Client, label: str, name: str
) -> None:
    assert_same_as_missing(intruder, BY_NAME[label], name, MISSING_NAME[: len(name)])
    assert owner.client.get(f"/v1/adapters/{name}").json()["sha256"] == owner.adapter_sha[name]


@pytest.mark.parametrize("label", list(BY_JOB_ID))
def test_another_tenants_job_answers_like_a_missing_one(owner: Owner, intruder: httpx.Client, label: str) -> None:
    assert_same_as_missing(intruder, BY_JOB_ID[label], owner.job_id, MISSING_JOB)
    assert wait_terminal(owner.client, owner.job_id)["status"] == "succeeded"  # B's DELETE cancelled nothing


def test_another_tenants_file_answers_like_a_missing_one(owner: Owner, intruder: httpx.Client) -> None:
    assert_same_as_missing(intruder, BY_FILE_ID["GET file"], owner.file_id, MISSING_FILE)
    assert owner.client.get(f"/v1/files/{owner.file_id}.png").status_code == 200


def test_names_are_per_tenant_and_writes_stay_in_their_namespace(
    owner: Owner, intruder: httpx.Client, spec: BackboneSpec
) -> None:
    assert intruder.get("/v1/adapters").json()["data"] == []
    # B uploading under A's name creates B's own adapter: 201 "created", never 200 "replaced"
    mine = intruder.put("/v1/adapters/style", files={"file": ("s.safetensors", lora_file(spec, seed=5))})
    assert mine.status_code == 201, mine.text
    assert owner.client.get("/v1/adapters/style").json()["sha256"] == owner.adapter_sha["style"]
    # B's token "<star>" does not clash with A's embedding of the same token: namespaces are separate
    assert (
        intruder.put("/v1/adapters/mystar", files={"file": ("t.safetensors", ti_file(spec, "<star>"))}).status_code
        == 201
    )
    assert intruder.delete("/v1/adapters/style").status_code == 200
    assert owner.client.get("/v1/adapters/style").status_code == 200
    assert sorted(m["name"] for m in owner.client.get("/v1/adapters").json()["data"]) == sorted(ADAPTERS)


# Every tenant route, with a body it would accept, for the authentication matrix.
TENANT_ROUTES: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "GET /v1/models": lambda c: c.get("/v1/models"),
    "GET /v1/adapters": lambda c: c.get("/v1/adapters"),
    "GET /v1/adapters/{name}": lambda c: c.get("/v1/adapters/style"),
    "PUT /v1/adapters/{name}": lambda c: c.put("/v1/adapters/x", files={"file": ("x.safetensors", b"x")}),
    "DELETE /v1/adapters/{name}": lambda c: c.delete("/v1/adapters/style"),
    "POST /v1/images/generations": lambda c: c.post("/v1/images/generations", json={"prompt": PROMPT, **FAST}),
    "POST /v1/images/edits": lambda c: c.post(
        "/v1/images/edits", files={"image": ("in.png", png16(), "image/png")}, data={"prompt": PROMPT}
    ),
    "POST /v1/jobs": lambda c: c.post("/v1/jobs", json={"prompt": PROMPT, **FAST}),
    "GET /v1/jobs/{id}": lambda c: c.get(f"/v1/jobs/{MISSING_JOB}"),
    "DELETE /v1/jobs/{id}": lambda c: c.delete(f"/v1/jobs/{MISSING_JOB}"),
    "GET /v1/jobs/{id}/events": lambda c: c.get(f"/v1/jobs/{MISSING_JOB}/events"),
    "GET /v1/files/{id}.png": lambda c: c.get(f"/v1/files/{MISSING_FILE}.png"),
}


@pytest.fixture(scope="module")
def bad_credentials(shared_server: Server, owner: Owner) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused, with the one message of an invalid key."""
    name, key = new_tenant(shared_server, "gone")
    with admin_client(shared_server) as admin:
        assert admin.delete(f"/v1/admin/tenants/{name}").status_code == 200
    key_id = str(owner.client.headers["authorization"]).removeprefix("Bearer ")[: len("dpx_") + 16]  # dpx_<id>
    return {
        "deleted tenant's key": {"Authorization": f"Bearer {key}"},
        "a real key id, wrong secret": {"Authorization": f"Bearer {key_id}_wrongsecret"},
        "unknown key": {"Authorization": "Bearer dpx_0123456789abcdef_nosuchsecret"},
        "not a diffplex key": {"Authorization": "Bearer sk-proj-0000"},
        "the admin key": {"Authorization": f"Bearer {ADMIN_KEY}"},
    }


@pytest.mark.parametrize("route", list(TENANT_ROUTES))
def test_every_tenant_route_refuses_bad_credentials_alike(
    shared_server: Server, bad_credentials: dict[str, dict[str, str]], route: str
) -> None:
    call = TENANT_ROUTES[route]
    with httpx.Client(base_url=shared_server.url, timeout=60) as anonymous:
        assert_error(call(anonymous), 401, "no API key")
        anonymous.headers["Authorization"] = "Basic dXNlcjpwYXNz"
        assert_error(call(anonymous), 401, "Bearer <key>")
    invalid = []
    for label, headers in bad_credentials.items():
        with httpx.Client(base_url=shared_server.url, headers=headers, timeout=60) as client:
            response = call(client)
            assert_error(response, 401, "invalid API key")
            assert response.headers["www-authenticate"] == "Bearer", label
            invalid.append(response.json())
    assert all(body == invalid[0] for body in invalid), invalid  # a revoked key reads like a made-up one


def test_admin_routes_refuse_tenant_keys(owner: Owner) -> None:
    assert_error(owner.client.get("/v1/admin/tenants"), 403, "admin key")
    assert_error(owner.client.post("/v1/admin/tenants", json={"name": "sneaky"}), 403, "admin key")
    assert_error(owner.client.delete("/v1/admin/tenants/anyone"), 403, "admin key")


def file_id_of(job: dict) -> str:
    """The id of a finished job's first image (response_format "url")."""
    return job["result"]["data"][0]["url"].rsplit("/", 1)[1].removesuffix(".png")


def recreate(url: str, name: str) -> httpx.Client:
    """Delete the tenant and create one of the same name: a client with the new tenant's key."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as admin:
        assert admin.delete(f"/v1/admin/tenants/{name}").json() == {"tenant": name, "deleted": True}
        created = admin.post("/v1/admin/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {created.json()['api_key']}"}, timeout=60)


def assert_sees_nothing_of(new: httpx.Client, job_ids: list[str], file_ids: list[str]) -> None:
    for job_id in job_ids:
        for probe in BY_JOB_ID.values():
            assert_same_as_missing(new, probe, job_id, MISSING_JOB)
    for file_id in file_ids:
        assert_same_as_missing(new, BY_FILE_ID["GET file"], file_id, MISSING_FILE)


def test_a_recreated_tenant_sees_nothing_of_the_deleted_one(shared_server: Server) -> None:
    name, key = new_tenant(shared_server, "reborn")
    with client_for(shared_server, key) as old:
        job_id = post_job(old)
        file_id = file_id_of(wait_terminal(old, job_id))
        assert old.get(f"/v1/files/{file_id}.png").status_code == 200
    with recreate(shared_server.url, name) as new:
        assert_sees_nothing_of(new, [job_id], [file_id])
        assert new.get("/v1/adapters").json()["data"] == []
    left = [p for p in data_dir(shared_server).rglob("*") if job_id in p.name or file_id in p.name]
    assert left == []  # removed, not only hidden


@pytest.fixture
def cluster(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Cluster]:
    # one worker, one image at a time: while a long job runs, the next one waits in the stream
    with running_cluster(tiny_model_dir, tmp_path, workers=1, DIFFPLEX_WORKER__MAX_IMAGES="1") as cluster:
        yield cluster


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def post_job(client: httpx.Client, **body: object) -> str:
    created = client.post("/v1/jobs", json={"prompt": PROMPT, "response_format": "url", **FAST, **body})
    assert created.status_code == 202, created.text
    return created.json()["id"]


def test_a_deleted_tenants_queued_and_running_jobs_are_dropped_by_the_worker(cluster: Cluster) -> None:
    name = "reborn"
    (worker,) = cluster.workers
    with cluster.tenant(name) as old:
        finished = post_job(old)
        file_id = file_id_of(wait_terminal(old, finished))
        running = post_job(old, steps=500)
        wait_for(lambda: old.get(f"/v1/jobs/{running}").json()["status"] == "running", "the long job never ran")
        queued = post_job(old)
        assert cluster.stream.backlog() == 1  # not taken: the worker is full
    old_epoch = cluster.store.get_tenant(name).epoch  # type: ignore[union-attr]

    def logged(message: str) -> set[str]:
        return {event["job"] for event in worker.log_events(message)}

    gone = "job dropped: its record is gone (expired, or its tenant was deleted)"
    deleted_at = time.time()
    with recreate(cluster.api.url, name) as new:
        wait_for(lambda: running in logged("job of a deleted tenant dropped"), "the running job was not dropped")
        wait_for(lambda: queued in logged(gone), "the queued job was not dropped")
        wait_for(lambda: cluster.stream.pending() + cluster.stream.backlog() == 0, "entries left unacknowledged")
        old_jobs, old_files = [finished, running, queued], [file_id]
        assert_sees_nothing_of(new, old_jobs, old_files)
        written = {running, queued} & logged("job finished")
        assert not written  # no record, no image
        words = (*old_jobs, *old_files, old_epoch)
        left = [k for k in cluster.store.client.scan_iter(f"{cluster.prefix}*") if any(w in k.decode() for w in words)]
        assert left == []
        drops = worker.log_events("job of a deleted tenant dropped") + worker.log_events(gone)

        done = wait_terminal(new, post_job(new))  # the worker goes on with the new tenant's work
        assert done["status"] == "succeeded" and new.get(f"/v1/files/{file_id_of(done)}.png").status_code == 200
    record(
        "tenant_recreated",
        old_ids_answered_404=len(old_jobs) + len(old_files),
        jobs_dropped=sorted(e["message"] for e in drops if e["job"] in (running, queued)),
        dropped_within_s=round(max(event_time(e) for e in drops) - deleted_at, 2),
        results_written_for_dropped_jobs=len(written),
        old_redis_keys_left=len(left),
    )
