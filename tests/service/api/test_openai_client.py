"""The official `openai` client talks to the server unchanged: generation with extra_body, edits, and
its typed exceptions from our error bodies."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from adapters.spec import BackboneSpec
from tests.service.api.adapter_files import lora_file
from tests.service.api.server import Server


@pytest.fixture
def client(server: Server, alice: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=alice.api_key, max_retries=0)  # type: ignore[attr-defined]


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_images_generate_with_extra_body(client: openai.OpenAI, alice: httpx.Client, spec: BackboneSpec) -> None:
    alice.put("/v1/adapters/style", files={"file": ("s.safetensors", lora_file(spec))})
    result = client.images.generate(
        model="diffplex-shapes",
        prompt="a red circle <lora:style:0.7>",
        n=2,
        size="16x16",  # type: ignore[arg-type]
        response_format="b64_json",
        extra_body={"steps": 2, "seed": 11, "sampler": "euler_a", "negative_prompt": "blue"},
    )
    assert len(result.data) == 2
    assert result.data[0].revised_prompt == "a red circle"
    assert pixels(result.data[0].b64_json).shape == (16, 16, 3)  # type: ignore[arg-type]
    assert result.data[0].model_extra["seed"] == 11  # type: ignore[index]


def test_images_edit(client: openai.OpenAI) -> None:
    source = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(source, format="PNG")
    result = client.images.edit(
        image=("in.png", source.getvalue(), "image/png"),
        prompt="a green square",
        response_format="b64_json",
        extra_body={"steps": 2, "strength": 0.6},
    )
    assert pixels(result.data[0].b64_json).shape == (16, 16, 3)  # type: ignore[arg-type]


def test_errors_become_typed_exceptions(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="x", size="16x16", extra_body={"steps": 2, "sampler": "nope"})  # type: ignore[arg-type]
    assert "unknown sampler" in bad.value.message
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="dall-e-3")
    stranger = openai.OpenAI(base_url=f"{server.url}/v1", api_key="dpx_0000000000000000_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.images.generate(prompt="x")
    assert [m.id for m in client.models.list()] == ["diffplex-shapes"]
