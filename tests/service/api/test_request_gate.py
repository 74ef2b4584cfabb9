"""The request middleware's checks on headers alone, before a body is read: the key (401 / 403), a tenant's
upload rate, concurrent uploads and adapter quota (429 / 403), bodies on routes that take none (413); then
its deadlines while a body arrives (408), and the metric labels it writes.

In-process (httpx's ASGI transport, the real app, LocalStore and tiny backbone): that transport hands the app
the request body one chunk per `receive` call, only when the app asks, so a `CountingBody` tells exactly
whether anything read the body before the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from adapters.spec import BackboneSpec
from service.boot.state import ServiceState
from service.core.settings import Settings
from tests.service.api.adapter_files import lora_file
from tests.service.api.in_process import in_process
from tests.service.api.server import ADMIN_KEY
from tests.service.api.test_images import FAST, assert_error

MiB = 1 << 20
BOUNDARY = "gate-test"
IDLE_TIMEOUT_S = 0.3
BODY_TIMEOUT_S = 1.0


def settings(model_dir: Path, data_dir: Path) -> Settings:
    return Settings(
        model_dir=model_dir,
        data_dir=data_dir,
        redis_url=None,
        admin_key=ADMIN_KEY,
        warmup=False,
        engine={"lora_rank": 4, "vpt_tokens": 3, "threads": 1},
        limits={
            "upload_rate_per_minute": 3,
            "max_concurrent_uploads": 1,
            "max_adapters_per_tenant": 2,
            "max_adapter_bytes_per_tenant": MiB,
        },
        http={"body_timeout_s": BODY_TIMEOUT_S, "body_idle_timeout_s": IDLE_TIMEOUT_S},
    )


class CountingBody:
    """A request body of `chunks` chunks, `pause_s` apart, that counts how many the app pulled; `first`
    replaces the first chunk (a multipart form's head)."""

    def __init__(self, chunks: int = 4, chunk: bytes = b"x" * 1024, pause_s: float = 0.0, first: bytes = b"") -> None:
        self.chunks, self.chunk, self.pause_s, self.first = chunks, chunk, pause_s, first
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.chunks):
            if i and self.pause_s:
                await asyncio.sleep(self.pause_s)
            self.pulled += 1
            yield self.first if i == 0 and self.first else self.chunk


def multipart(field: str, data: bytes, filename: str = "a.safetensors") -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def declared(length: int, key: str | None = None, multipart_form: bool = True) -> dict[str, str]:
    headers = {"Content-Length": str(length)}
    if multipart_form:
        headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


async def new_key(client: httpx.AsyncClient, name: str) -> str:
    created = await client.post(
        "/v1/admin/tenants", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert created.status_code == 201, created.text
    return created.json()["api_key"]


async def upload(client: httpx.AsyncClient, key: str, name: str, data: bytes) -> httpx.Response:
    body, headers = multipart("file", data)
    return await client.put(f"/v1/adapters/{name}", content=body, headers={**headers, "Authorization": f"Bearer {key}"})


async def refused_unread(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], status: int, *words: str
) -> dict:
    """Sends a counting body and checks the answer came without a chunk of it read, on a closed connection."""
    body = CountingBody()
    response = await client.request(method, path, content=body, headers=headers)
    error = assert_error(response, status, *words)
    assert body.pulled == 0, (method, path, "read", body.pulled, "chunks before answering")
    assert response.headers["connection"] == "close"  # the unread body is not read and discarded either
    return error


async def keys_and_headers(model_dir: Path, data_dir: Path) -> None:
    async with in_process(settings(model_dir, data_dir)) as (_, client):
        key = await new_key(client, "alice")
        routes = [
            ("PUT", "/v1/adapters/style"),
            ("POST", "/v1/images/edits"),
            ("POST", "/v1/images/generations"),
            ("POST", "/v1/jobs"),
        ]
        for method, path in routes:
            length = declared(60 * MiB if method == "PUT" or path.endswith("edits") else 1000)
            error = await refused_unread(client, method, path, length, 401, "no API key", "Authorization: Bearer")
            assert error["code"] == "missing_api_key"
            bad = {**length, "Authorization": "Bearer dpx_0123456789abcdef_wrong"}
            await refused_unread(client, method, path, bad, 401, "invalid API key")
        tenant_on_admin = declared(100, key, multipart_form=False)
        error = await refused_unread(client, "POST", "/v1/admin/tenants", tenant_on_admin, 403, "admin key")
        assert error["code"] == "not_admin"

        # A body where none is taken: refused from its headers, whatever the route.
        for method, path in (("GET", "/livez"), ("GET", "/v1/adapters"), ("DELETE", "/v1/adapters/style")):
            error = await refused_unread(client, method, path, declared(4, key), 413, f"{method} requests take no body")
            assert error["code"] == "unexpected_body"

        # The upload cap is for the two multipart routes; the others keep the JSON cap (64 KiB).
        big_json = b'{"prompt": "' + b"x" * (100 * 1024) + b'"}'
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        assert_error(await client.post("/v1/images/generations", content=big_json, headers=headers), 413, "65536")
        not_an_adapter = await upload(client, key, "junk", b"x" * (100 * 1024))
        assert_error(not_an_adapter, 400)  # read and inspected: within the upload cap

        # Metric labels: a made-up method is "other", an unknown path "unmatched"; neither reaches /metrics.
        await client.request("BREW", "/livez")
        await client.get("/no/such/route/zz-made-up-route")
        text = (await client.get("/metrics")).text
        assert 'method="other",route="/livez",status="405"' in text
        assert 'route="unmatched",status="404"' in text
        assert "BREW" not in text and "zz-made-up-route" not in text
        assert 'diffplex_http_refused_total{status="401"}' in text


def test_requests_are_refused_on_their_headers_without_their_body_being_read(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    asyncio.run(keys_and_headers(tiny_model_dir, tmp_path / "data"))


async def upload_limits(model_dir: Path, data_dir: Path, spec: BackboneSpec) -> None:
    data = lora_file(spec)
    async with in_process(settings(model_dir, data_dir)) as (app, client):
        state: ServiceState = app.state.service
        key = await new_key(client, "bob")
        auth = {"Authorization": f"Bearer {key}"}

        # Concurrent uploads (1 here): a second one, or an edit, while the first is still arriving.
        body, headers = multipart("file", data)
        arrived = asyncio.Event()

        async def held_back() -> AsyncIterator[bytes]:  # half the file, then the rest once `arrived` is set
            yield body[: len(body) // 2]
            await arrived.wait()
            yield body[len(body) // 2 :]

        first = asyncio.ensure_future(client.put("/v1/adapters/a", content=held_back(), headers={**headers, **auth}))
        while state.uploads.held("bob") == 0:
            await asyncio.sleep(0.01)
        for method, path in (("PUT", "/v1/adapters/b"), ("POST", "/v1/images/edits")):
            busy = await refused_unread(client, method, path, declared(len(body), key), 429, "1 uploads in progress")
            assert busy["code"] == "too_many_uploads"
        arrived.set()
        assert (await first).status_code == 201
        assert state.uploads.held("bob") == 0  # given back

        # Quota (2 adapters, 1 MiB): over the count, or a declared body that cannot fit, before the body.
        assert (await upload(client, key, "b", data)).status_code == 201
        over = await refused_unread(client, "PUT", "/v1/adapters/c", declared(1000, key), 403, "limit is 2")
        assert over["code"] == "quota_exceeded"
        # The rate (3 a minute) was used up by those three attempts and the refused one.
        limited = await refused_unread(client, "PUT", "/v1/adapters/a", declared(1000, key), 429, "3 adapter uploads")
        assert limited["code"] == "upload_rate_exceeded"
        generated = await client.post("/v1/images/generations", json={"prompt": "a red circle", **FAST}, headers=auth)
        assert generated.status_code == 200, generated.text  # generations have their own window

        carol = await new_key(client, "carol")
        fat = declared(3 * MiB, carol)
        too_big = await refused_unread(client, "PUT", "/v1/adapters/a", fat, 403, "would bring your adapters over")
        assert too_big["code"] == "quota_exceeded"
        assert state.uploads.held("carol") == 0


def test_upload_concurrency_rate_and_quota_are_checked_before_the_body(
    tiny_model_dir: Path, tmp_path: Path, spec: BackboneSpec
) -> None:
    asyncio.run(upload_limits(tiny_model_dir, tmp_path / "data", spec))


async def slow_bodies(model_dir: Path, data_dir: Path) -> None:
    async with in_process(settings(model_dir, data_dir)) as (app, client):
        state: ServiceState = app.state.service
        key = await new_key(client, "dave")
        json_headers = declared(4 * 1024, key, multipart_form=False)
        cases = [
            # a pause longer than the idle timeout between two chunks
            (json_headers, CountingBody(chunks=4, pause_s=3 * IDLE_TIMEOUT_S), "stalled for 0.3s", IDLE_TIMEOUT_S),
            # chunks keep coming, each within the idle timeout, but the whole body takes too long
            (
                json_headers,
                CountingBody(chunks=40, pause_s=IDLE_TIMEOUT_S / 2),
                "did not arrive within 1s",
                BODY_TIMEOUT_S,
            ),
        ]
        for headers, body, words, after_s in cases:
            started = time.monotonic()
            response = await client.post("/v1/images/generations", content=body, headers=headers)
            took = time.monotonic() - started
            error = assert_error(response, 408, words)
            assert error["code"] == "timeout" and response.headers["connection"] == "close"
            assert after_s <= took < after_s + 2.0, took  # cut at the deadline, not when the client gives up
            assert 0 < body.pulled < body.chunks

        # An edit's slow image: refused the same way, and its upload slot is given back.
        form_head = multipart("image", b"")[0].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        edit = CountingBody(chunks=4, pause_s=3 * IDLE_TIMEOUT_S, first=form_head)
        response = await client.post("/v1/images/edits", content=edit, headers=declared(4 * 1024, key))
        assert_error(response, 408, "stalled")
        assert state.uploads.held("dave") == 0


def test_a_body_that_arrives_too_slowly_is_cut_off_with_408(tiny_model_dir: Path, tmp_path: Path) -> None:
    asyncio.run(slow_bodies(tiny_model_dir, tmp_path / "data"))
