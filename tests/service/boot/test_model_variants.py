"""A pipeline directory published with fp16-variant weights only serves: its images equal, to the pixel, those
of a plain directory holding the same fp16-rounded weights (both load as fp32)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from tests.export.builders import fp16_variant_dirs
from tests.service.api.server import ADMIN_KEY, running_server
from tests.service.api.test_images import FAST, b64_pixels

BODY = {"prompt": "a red circle on a blue background", "n": 2, "seed": 7, "response_format": "b64_json", **FAST}


def generate(model_dir: Path, root: Path, **env: str) -> list[np.ndarray]:
    with running_server(model_dir, root, DIFFPLEX_WARMUP="false", **env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            created = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin)
            assert created.status_code == 201, created.text
            key = created.json()["api_key"]
            response = client.post("/v1/images/generations", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return [b64_pixels(item) for item in response.json()["data"]]


def test_an_fp16_variant_directory_serves_the_images_of_its_plain_twin(tiny_model_dir: Path, tmp_path: Path) -> None:
    variant_dir, rounded_dir = fp16_variant_dirs(tiny_model_dir, tmp_path / "models")
    served = generate(variant_dir, tmp_path / "variant")  # detected: no setting
    expected = generate(rounded_dir, tmp_path / "rounded")
    assert len(served) == len(expected) == 2
    for image, reference in zip(served, expected, strict=True):
        assert np.array_equal(image, reference)  # 0/255: the same fp32 weights, the same computation
    assert not np.array_equal(served[0], served[1])  # the images do depend on the seed


def test_the_variant_may_be_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    variant_dir, _ = fp16_variant_dirs(tiny_model_dir, tmp_path / "models")
    assert len(generate(variant_dir, tmp_path / "named", DIFFPLEX_MODEL_VARIANT="fp16")) == 2
