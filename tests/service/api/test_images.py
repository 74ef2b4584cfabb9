"""Image generation through a real server: OpenAI-shaped answers, seeds, url files, edits, every kind of
bad input answered with a 4xx that says what to change."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
from PIL import Image

from tests.service.api.conftest import MAX_BODY_BYTES, RATE_PER_MINUTE, make_tenant
from tests.service.api.server import Server

FAST = {"steps": 2, "size": "16x16"}


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def b64_pixels(item: dict) -> np.ndarray:
    return png_pixels(base64.b64decode(item["b64_json"]))


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


def test_generation_returns_n_pngs_with_consecutive_seeds_and_is_deterministic(alice: httpx.Client) -> None:
    body = {"prompt": "a red circle on a blue background", "n": 2, "seed": 7, **FAST}
    first = alice.post("/v1/images/generations", json=body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert isinstance(answer["created"], int)
    assert [d["seed"] for d in answer["data"]] == [7, 8]
    assert all("total_s" in d["timings"] and "revised_prompt" not in d for d in answer["data"])
    images = [b64_pixels(d) for d in answer["data"]]
    assert images[0].shape == (16, 16, 3)
    assert not np.array_equal(images[0], images[1])
    again = alice.post("/v1/images/generations", json={**body, "n": 1, "seed": 8}).json()
    alone = b64_pixels(again["data"][0]).astype(int)
    assert np.abs(alone - images[1]).max() <= 1  # batch neighbours change float32 rounding, not the image
    assert first.headers["x-request-id"]


def test_url_format_serves_the_png_to_its_tenant_only(alice: httpx.Client, bob: httpx.Client) -> None:
    answer = alice.post("/v1/images/generations", json={"prompt": "a green square", "response_format": "url", **FAST})
    assert answer.status_code == 200, answer.text
    url = answer.json()["data"][0]["url"]
    assert url.startswith(str(alice.base_url)) and url.endswith(".png")
    image = alice.get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_pixels(image.content).shape == (16, 16, 3)
    assert_error(bob.get(url), 404, "not found")
    assert_error(alice.get("/v1/files/img_doesnotexist.png"), 404, "not found")


def test_edits_run_image_to_image(alice: httpx.Client) -> None:
    source = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(source, format="PNG")
    files = {"image": ("in.png", source.getvalue(), "image/png")}
    data = {"prompt": "a red circle", "strength": "0.5", "steps": "4", "seed": "3", "n": "2"}
    answer = alice.post("/v1/images/edits", files=files, data=data)
    assert answer.status_code == 200, answer.text
    assert [d["seed"] for d in answer.json()["data"]] == [3, 4]
    assert b64_pixels(answer.json()["data"][0]).shape == (16, 16, 3)
    bad_strength = alice.post("/v1/images/edits", files=files, data={**data, "strength": "1.5"})
    assert_error(bad_strength, 400, "strength")
    not_an_image = alice.post("/v1/images/edits", files={"image": ("x.png", b"nope", "image/png")}, data=data)
    assert_error(not_an_image, 400, "could not be read")
    assert_error(alice.post("/v1/images/edits", data=data), 400, "image")
    odd = io.BytesIO()
    Image.fromarray(np.zeros((15, 16, 3), np.uint8)).save(odd, format="PNG")
    odd_size = alice.post("/v1/images/edits", files={"image": ("odd.png", odd.getvalue())}, data=data)
    assert_error(odd_size, 400, "16x15", "resize")


def test_edits_refuse_an_image_larger_than_the_model_from_its_header(alice: httpx.Client) -> None:
    bomb = io.BytesIO()
    Image.new("L", (4096, 4096)).save(bomb, format="PNG")  # 16 KB that would decode to 48 MiB of RGB
    data = {"prompt": "a red circle", "steps": "2"}
    answer = alice.post("/v1/images/edits", files={"image": ("bomb.png", bomb.getvalue())}, data=data)
    assert assert_error(answer, 400, "4096x4096", "takes images up to")["param"] == "image"
    gif = io.BytesIO()
    Image.new("RGB", (16, 16)).save(gif, format="GIF")
    answer = alice.post("/v1/images/edits", files={"image": ("in.gif", gif.getvalue())}, data=data)
    assert assert_error(answer, 400, "PNG, JPEG or WebP")["param"] == "image"


def test_bounded_fields_sizes_and_weights(alice: httpx.Client) -> None:
    post = lambda body: alice.post("/v1/images/generations", json={"prompt": "a red circle", **FAST, **body})  # noqa: E731
    assert assert_error(post({"size": "１６x１６"}), 400, "ASCII digits")["param"] == "size"
    assert assert_error(post({"prompt": "a <lora:s:1e308>"}), 400, "from -10 to 10")["param"] == "prompt"
    assert assert_error(post({"user": "u" * 257}), 400, "user")["param"] == "user"
    assert assert_error(post({"adapters": [{"name": f"a{i}"} for i in range(65)]}), 400, "at most 64")


def test_bad_requests_get_a_400_naming_the_problem(alice: httpx.Client) -> None:
    post = lambda body: alice.post("/v1/images/generations", json=body)  # noqa: E731
    ok = {"prompt": "a red circle", **FAST}
    assert_error(post({**ok, "n": 5}), 400, "at most 4")
    assert_error(post({**ok, "steps": 201}), 400, "limit is 200")
    assert_error(post({**ok, "n": 0}), 400, "n:")
    assert_error(post({**ok, "stpes": 3}), 400, "stpes", "unknown field")
    assert_error(post({**ok, "sampler": "nope"}), 400, "unknown sampler", "euler_a")
    assert_error(post({**ok, "size": "17x16"}), 400, "width 17")
    assert_error(post({**ok, "size": "big"}), 400, "WIDTHxHEIGHT")
    assert_error(post({**ok, "guidance_interval": [0.8, 0.2]}), 400, "guidance_interval")
    assert_error(post({**ok, "cache_interval": 11}), 400, "cache_interval")
    assert_error(post({**ok, "prompt": ""}), 400, "prompt")
    assert_error(post({**ok, "prompt": "x" * 1001}), 400, "limit is 1000")
    assert_error(post({**ok, "prompt": "a <lora:style:heavy>"}), 400, "weight must be a number")
    assert_error(post({**ok, "model": "dall-e-3"}), 404, "does not exist")
    error = assert_error(post({**ok, "adapters": [{"name": "ghost"}]}), 404, "ghost", "PUT /v1/adapters/ghost")
    assert error["code"] == "adapter_not_found"
    raw = alice.post("/v1/images/generations", content=b"{bad", headers={"content-type": "application/json"})
    assert_error(raw, 400, "not valid JSON")
    assert_error(alice.post("/v1/images/generations", content=b"[]"), 400, "JSON object")
    too_big = alice.post("/v1/images/generations", json={"prompt": "x" * (MAX_BODY_BYTES + 10)})
    assert_error(too_big, 413, "larger than")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap applies while the body streams in
        yield b'{"prompt": "'
        yield b"x" * (MAX_BODY_BYTES + 10)
        yield b'"}'

    streamed = alice.post("/v1/images/generations", content=chunked(), headers={"content-type": "application/json"})
    assert_error(streamed, 413, "larger than")


def test_authentication_errors(server: Server, alice: httpx.Client) -> None:
    assert_error(httpx.get(f"{server.url}/v1/models"), 401, "Authorization: Bearer")
    bad = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer dpx_0123456789abcdef_wrong"})
    assert_error(bad, 401, "invalid API key")
    assert_error(httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Basic abc"}), 401, "Bearer")
    assert_error(alice.post("/v1/admin/tenants", json={"name": "x"}), 403, "admin")
    [model] = alice.get("/v1/models").json()["data"]
    assert model["id"] == "diffplex-shapes"
    # the tiny test backbone: native 16x16, sides in steps of 4 up to 4x; no list of trained words
    assert (model["native_size"], model["size_multiple"], model["max_side"]) == ("16x16", 4, 64)
    assert "vocabulary" not in model


def test_what_the_model_honours_in_part_is_answered_with_warnings(alice: httpx.Client) -> None:
    plain = alice.post("/v1/images/generations", json={"prompt": "a red circle", **FAST})
    assert plain.status_code == 200 and "warnings" not in plain.json()
    body = {"prompt": "a red <mystery> circle", "steps": 2, "size": "32x16"}
    answer = alice.post("/v1/images/generations", json=body)
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["warnings"]
    assert first.startswith("<mystery>: not a token of any of your embeddings")
    assert second.startswith("size 32x16 is not the model's native 16x16")


def test_tenant_administration(admin: httpx.Client, server: Server) -> None:
    client = make_tenant(admin, server)
    assert client.get("/v1/adapters").status_code == 200
    listed = [t["tenant"] for t in admin.get("/v1/admin/tenants").json()["data"]]
    assert client.tenant in listed  # type: ignore[attr-defined]
    assert_error(admin.post("/v1/admin/tenants", json={"name": client.tenant}), 409, "exists")  # type: ignore[attr-defined]
    assert_error(admin.post("/v1/admin/tenants", json={"name": "Bad Name!"}), 400, "not allowed")
    assert admin.delete(f"/v1/admin/tenants/{client.tenant}").status_code == 200  # type: ignore[attr-defined]
    assert_error(client.get("/v1/adapters"), 401, "invalid API key")  # the key died with its tenant
    assert_error(admin.delete(f"/v1/admin/tenants/{client.tenant}"), 404)  # type: ignore[attr-defined]
    client.close()


def test_rate_limit_answers_429_with_retry_after(admin: httpx.Client, server: Server) -> None:
    client = make_tenant(admin, server)
    statuses = [client.post("/v1/images/generations", json={"prompt": ""}).status_code for _ in range(RATE_PER_MINUTE)]
    assert set(statuses) == {400}  # invalid requests count too: they cost a parse
    limited = client.post("/v1/images/generations", json={"prompt": "a red circle", **FAST})
    assert_error(limited, 429, "rate limit")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    client.close()


def test_health_and_metrics(server: Server, alice: httpx.Client) -> None:
    assert httpx.get(f"{server.url}/livez").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["backend"] == "pytorch"
    alice.post("/v1/images/generations", json={"prompt": "a red circle", **FAST})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "diffplex_request_latency_seconds_bucket",
        "diffplex_queue_time_seconds_count",
        "diffplex_unet_rows_per_call_bucket",
        "diffplex_requests_active",
        "diffplex_requests_waiting",
        "diffplex_adapter_cache_hits_total",
        "diffplex_adapter_cache_misses_total",
        "diffplex_adapter_cache_loads_total",
    ):
        assert name in text, name
    assert 'route="/v1/images/generations"' in text
    assert "/v1/images/generations" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_step_caching_is_a_request_option(server: Server, alice: httpx.Client) -> None:
    body = {"prompt": "a red circle on a blue background", "seed": 4, "steps": 5, "size": "16x16"}
    full = b64_pixels(alice.post("/v1/images/generations", json=body).json()["data"][0]).astype(int)
    cached = [alice.post("/v1/images/generations", json={**body, "cache_interval": 2}) for _ in range(2)]
    assert all(r.status_code == 200 for r in cached), cached[0].text
    first, second = (b64_pixels(r.json()["data"][0]).astype(int) for r in cached)
    assert np.abs(first - second).max() <= 1  # deterministic, like every other option
    assert np.abs(first - full).max() > 1  # and not a no-op: steps 1 and 3 ran the shallow U-Net
    assert 'diffplex_unet_rows_per_call_count{graph="cfg_shallow"}' in httpx.get(f"{server.url}/metrics").text


def images_total(server: Server, status: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    prefix = f'diffplex_images_total{{status="{status}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_client_that_leaves_frees_its_engine_rows(server: Server, alice: httpx.Client) -> None:
    """4 requests of 4 images x 200 steps (seconds each) abandoned after 0.3 s: every image is cancelled."""
    ok, failed, cancelled = (images_total(server, outcome) for outcome in ("ok", "failed", "cancelled"))
    body = {"prompt": "a red circle", "n": 4, "steps": 200, "size": "16x16", "sampler": "euler"}
    url, headers = f"{server.url}/v1/images/generations", {"Authorization": alice.headers["authorization"]}
    for _ in range(4):
        try:  # a fresh connection each time, dropped by the client after 0.3 s
            httpx.post(url, json=body, headers=headers, timeout=0.3)
        except httpx.TransportError:
            pass
    deadline = time.monotonic() + 120

    def settled() -> bool:
        idle = httpx.get(f"{server.url}/readyz").json()["load"] == 0
        left = sum(images_total(server, outcome) for outcome in ("ok", "failed", "cancelled"))
        return idle and left >= ok + failed + cancelled + 16

    while not settled():
        assert time.monotonic() < deadline, "the abandoned images never left the engine"
        time.sleep(0.1)
    assert images_total(server, "ok") == ok  # every image was cancelled, none made for nobody
    assert images_total(server, "failed") == failed  # a client that leaves is no failure of the service
    assert images_total(server, "cancelled") == cancelled + 16
