"""A server whose DIFFPLEX_MODEL_DIR is an SDXL pipeline directory, on the PyTorch backend and on ONNX Runtime over
its export: generations with SDXL's request fields and with uploaded SDXL adapters (a LoRA on the U-Net and both
text encoders, a clip_l / clip_g embedding), jobs and edits answer with diffusers' images; an SD-1.x server
refuses those fields with a 400 that says why."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from export.manifest import Manifest
from tests.adapters.sdxl.builders import peft_sdxl_models, save_sdxl_lora
from tests.service.api.server import ADMIN_KEY, running_server
from tests.service.api.test_images import assert_error, b64_pixels
from tests.service.engine.helpers import max_pixel_diff
from tests.service.engine.test_sdxl import BACKENDS, diffusers_image
from tests.service.engine.test_sdxl_adapters import ALPHA, RANK, ti_file

PROMPT = "a red circle on a blue background"
XL_FIELDS = {
    "prompt_2": "two small stars",
    "negative_prompt": "blue",
    "original_size": [48, 64],
    "crops_coords_top_left": [4, 8],
}
SERVER_BACKENDS = {"torch": "pytorch", "ort": "onnxruntime"}


@pytest.fixture(scope="module", params=list(SERVER_BACKENDS))
def sdxl_server(
    request: pytest.FixtureRequest,
    tiny_sdxl_model_dir: Path,
    tiny_sdxl_export: tuple[Path, Manifest],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, httpx.Client]]:
    """(backend, a client with a tenant's key) on a server of that backend."""
    backend = request.param
    root = tmp_path_factory.mktemp(f"sdxl-server-{backend}")
    env = {"DIFFPLEX_WARMUP": "false", "DIFFPLEX_BACKEND": SERVER_BACKENDS[backend]}
    if backend == "ort":
        env["DIFFPLEX_EXPORT_DIR"] = str(tiny_sdxl_export[0])
    with running_server(tiny_sdxl_model_dir, root, **env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            created = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin)
            assert created.status_code == 201, created.text
            client.headers["Authorization"] = f"Bearer {created.json()['api_key']}"
            yield backend, client


def test_generations_equal_diffusers(sdxl_server: tuple[str, httpx.Client], tiny_sdxl_model_dir: Path) -> None:
    backend, client = sdxl_server
    body = {"prompt": PROMPT, "n": 2, "seed": 7, "steps": 4, "sampler": "euler", "guidance_scale": 4.0, **XL_FIELDS}
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    images = [b64_pixels(item) for item in response.json()["data"]]
    theirs = {**XL_FIELDS, "original_size": (48, 64), "crops_coords_top_left": (4, 8)}
    for i, image in enumerate(images):
        want = diffusers_image(tiny_sdxl_model_dir, steps=4, seed=7 + i, prompt=PROMPT, guidance_scale=4.0, **theirs)
        assert max_pixel_diff(image, want) <= BACKENDS[backend]


def test_uploaded_sdxl_adapters_equal_diffusers(
    sdxl_server: tuple[str, httpx.Client], tiny_sdxl_model_dir: Path, tmp_path: Path
) -> None:
    backend, client = sdxl_server
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model_dir)
    lora = save_sdxl_lora(
        peft_sdxl_models((pipe.unet, pipe.text_encoder, pipe.text_encoder_2), RANK, ALPHA, 21), tmp_path
    )
    ti, vectors = ti_file(tmp_path)
    uploads = {"sharp": (lora, {}), "glow": (ti, {"token": "<glow>"})}
    for name, (path, fields) in uploads.items():
        answer = client.put(f"/v1/adapters/{name}", files={"file": (path.name, path.read_bytes())}, data=fields)
        assert answer.status_code in (200, 201), answer.text
    body = {
        "prompt": "a <glow> circle <lora:sharp:1>",
        "seed": 3,
        "steps": 4,
        "sampler": "euler",
        "guidance_scale": 4.0,
    }
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    want = diffusers_image(
        tiny_sdxl_model_dir, steps=4, seed=3, prompt="a <glow> circle", guidance_scale=4.0, lora=lora, ti=vectors
    )
    assert max_pixel_diff(b64_pixels(response.json()["data"][0]), want) <= BACKENDS[backend]


def test_models_report_the_native_size(sdxl_server: tuple[str, httpx.Client]) -> None:
    (model,) = sdxl_server[1].get("/v1/models").json()["data"]
    assert model["native_size"] == "16x16" and model["size_multiple"] == 4


def test_a_job_and_an_edit_run(sdxl_server: tuple[str, httpx.Client]) -> None:
    client = sdxl_server[1]
    job = client.post("/v1/jobs", json={"prompt": PROMPT, "steps": 2, "prompt_2": "a star", "seed": 1})
    assert job.status_code == 202, job.text
    with client.stream("GET", f"/v1/jobs/{job.json()['id']}/events") as events:
        assert any(line.startswith("event: done") for line in events.iter_lines())
    source = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(source, "PNG")
    edit = client.post(
        "/v1/images/edits",
        files={"image": ("in.png", source.getvalue(), "image/png")},
        data={"prompt": PROMPT, "strength": "0.5", "steps": "4", "target_size": "[16, 16]"},
    )
    assert edit.status_code == 200, edit.text


def test_bad_size_conditioning_is_a_400(sdxl_server: tuple[str, httpx.Client]) -> None:
    response = sdxl_server[1].post("/v1/images/generations", json={"prompt": PROMPT, "original_size": [0, 8]})
    assert_error(response, 400, "original_size must be two integers from 1")


def test_an_sd_server_refuses_sdxl_fields(alice: httpx.Client) -> None:
    response = alice.post("/v1/images/generations", json={"prompt": PROMPT, "prompt_2": "a star"})
    assert_error(response, 400, "prompt_2 condition SDXL models only")


def test_a_second_negative_prompt_alone_is_answered_with_a_warning(sdxl_server: tuple[str, httpx.Client]) -> None:
    body = {"prompt": PROMPT, "steps": 2, "negative_prompt_2": "blue"}
    response = sdxl_server[1].post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    assert any("negative_prompt_2 has no effect without negative_prompt" in w for w in response.json()["warnings"])
