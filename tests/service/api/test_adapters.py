"""Adapters over HTTP: each kind uploaded and used by the very next request; tenants isolated; bad files,
quotas and replacements answered clearly."""

from __future__ import annotations

import httpx
import numpy as np
import torch

from adapters.spec import BackboneSpec
from tests.adapters.builders import safetensors_bytes
from tests.service.api.adapter_files import lora_file, ti_file, vpt_file
from tests.service.api.server import Server
from tests.service.api.test_images import FAST, assert_error, b64_pixels

PROMPT = "a red circle on a blue background"


def generate(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/images/generations", json={"prompt": PROMPT, "seed": 5, **FAST, **body})


def upload(client: httpx.Client, name: str, data: bytes, **form: str) -> httpx.Response:
    return client.put(f"/v1/adapters/{name}", files={"file": (f"{name}.safetensors", data)}, data=form)


def image(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return b64_pixels(response.json()["data"][0])


def test_each_kind_is_usable_by_the_next_request_and_invisible_to_other_tenants(
    alice: httpx.Client, bob: httpx.Client, spec: BackboneSpec
) -> None:
    base = image(generate(alice))

    created = upload(alice, "style", lora_file(spec), kind="lora")
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "lora" and created.json()["detail"]["rank"] == 2
    tagged = generate(alice, prompt=f"{PROMPT} <lora:style:0.8>")
    assert tagged.json()["data"][0]["revised_prompt"] == PROMPT
    with_lora = image(tagged)
    assert not np.array_equal(with_lora, base)
    assert np.array_equal(image(generate(alice, adapters=[{"name": "style", "weight": 0.8}])), with_lora)

    assert upload(alice, "night", vpt_file(spec), kind="vpt").status_code == 201
    assert not np.array_equal(image(generate(alice, prompt=f"{PROMPT} <vpt:night>")), base)

    ti = upload(alice, "star", ti_file(spec, "<star>"))
    assert ti.status_code == 201, ti.text
    assert ti.json()["kind"] == "textual_inversion" and ti.json()["tokens"] == ["<star>"]
    assert not np.array_equal(image(generate(alice, prompt="a red <star> on a blue background")), base)

    names = [a["name"] for a in alice.get("/v1/adapters").json()["data"]]
    assert names == ["night", "star", "style"]
    assert bob.get("/v1/adapters").json()["data"] == []
    for name in names:
        assert_error(bob.get(f"/v1/adapters/{name}"), 404, "not found")
        assert_error(bob.delete(f"/v1/adapters/{name}"), 404, "not found")
        assert_error(generate(bob, adapters=[{"name": name}]), 404, "not found in your namespace")
    # bob writing alice's token is plain text to him: same image as without any adapter
    assert np.array_equal(
        image(generate(bob, prompt="a red <star> on a blue background")),
        image(generate(bob, prompt="a red <star> on a blue background")),
    )


def test_replacing_and_deleting_take_effect_at_once(alice: httpx.Client, spec: BackboneSpec) -> None:
    assert upload(alice, "style", lora_file(spec, seed=1)).status_code == 201
    first = image(generate(alice, adapters=[{"name": "style"}]))
    replaced = upload(alice, "style", lora_file(spec, seed=9))
    assert replaced.status_code == 200, replaced.text
    second = image(generate(alice, adapters=[{"name": "style"}]))
    assert not np.array_equal(first, second)
    assert alice.delete("/v1/adapters/style").json()["deleted"] is True
    assert_error(generate(alice, adapters=[{"name": "style"}]), 404, "style")
    assert_error(alice.get("/v1/adapters/style"), 404)


def test_bad_uploads_get_a_4xx_with_the_reason(alice: httpx.Client, spec: BackboneSpec) -> None:
    assert_error(upload(alice, "junk", b"not a safetensors file"), 400, "safetensors")
    assert_error(upload(alice, "empty", b""), 400, "empty")
    assert_error(upload(alice, "style", lora_file(spec), kind="vpt"), 400, "holds a lora adapter, not vpt")
    assert_error(upload(alice, "style", lora_file(spec), kind="hypernetwork"), 400, "not one of")
    assert_error(upload(alice, "bad name", lora_file(spec)), 400, "not allowed")
    other_model = safetensors_bytes({"<w>": torch.randn(2, spec.token_embedding_dim + 8)})
    assert_error(upload(alice, "w", other_model), 400, "trained for another model")
    assert upload(alice, "x", ti_file(spec, "<x>")).status_code == 201
    assert_error(upload(alice, "y", ti_file(spec, "<x>", seed=4)), 409, "already defined", "'x'")
    assert_error(alice.put("/v1/adapters/nofile", data={"kind": "lora"}), 400, "file")


def test_quota_counts_adapters(alice: httpx.Client, spec: BackboneSpec) -> None:
    for i in range(4):
        assert upload(alice, f"a{i}", ti_file(spec, f"<t{i}>", seed=i)).status_code == 201
    error = assert_error(upload(alice, "a4", ti_file(spec, "<t4>")), 403, "limit is 4")
    assert error["type"] == "insufficient_quota"
    assert upload(alice, "a0", ti_file(spec, "<t0>", seed=7)).status_code == 200  # replacing fits


def test_adapter_cache_metrics_move(alice: httpx.Client, spec: BackboneSpec, server: Server) -> None:
    upload(alice, "style", lora_file(spec, seed=3))
    generate(alice, adapters=[{"name": "style"}])
    generate(alice, adapters=[{"name": "style"}])
    text = httpx.get(f"{server.url}/metrics").text
    hits = [line for line in text.splitlines() if line.startswith("diffplex_adapter_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) >= 1
