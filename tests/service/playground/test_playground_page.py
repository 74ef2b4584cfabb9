"""The playground in headless Chromium against a real `diffplex serve`: a key, a generation with its progress
bar fed by server-sent events, an adapter uploaded and compared side by side, the API's errors on screen.

Every image on the page is checked against the API itself (same body, same pixels), so the page is known
to send what its fields say. Screenshots land in .work/artifacts/ and the test's tmp directory.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from PIL import Image

from adapters.spec import BackboneSpec
from tests.service.api.adapter_files import lora_file
from tests.service.api.conftest import make_tenant
from tests.service.api.server import Server
from tests.service.api.test_images import b64_pixels
from tests.service.playground.conftest import ARTIFACTS, NO_PLAYWRIGHT

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT).expect

TIMEOUT_MS = 120_000  # CI machines are slow: generous waits, never fixed sleeps
PROMPT = "a red circle on a blue background"
STEPS = 8
SIZE = "64x64"
SEED = 7

# Records every value the progress bar takes, so the test sees it move rather than only its end.
WATCH_PROGRESS = """() => {
  const bar = document.getElementById("progress");
  window.progressSeen = [];
  new MutationObserver(() => window.progressSeen.push([bar.value, bar.max]))
    .observe(bar, { attributes: true, attributeFilter: ["value", "max"] });
}"""


def shown_pixels(page: Page, selector: str) -> list[np.ndarray]:
    sources = page.locator(selector).evaluate_all("imgs => imgs.map(i => i.src)")
    images = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            images.append(np.asarray(image.convert("RGB")).astype(int))
    return images


def api_pixels(client: httpx.Client, **body: object) -> list[np.ndarray]:
    answer = client.post("/v1/images/generations", json={"prompt": PROMPT, "size": SIZE, "steps": STEPS, **body})
    assert answer.status_code == 200, answer.text
    return [b64_pixels(item).astype(int) for item in answer.json()["data"]]


def save_screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    page.screenshot(path=path, full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    print(f"screenshot: {ARTIFACTS / name} (and {path})")
    return path


def enter_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")  # `change`: the page lists the key's adapters


def test_playground_generates_uploads_compares_and_shows_errors(
    page: Page, server: Server, admin: httpx.Client, spec: BackboneSpec, tmp_path: Path
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(server.url)
    expect(page.locator("#server-status")).to_contain_text("ready")

    enter_key(page, "dpx_not_a_real_key")
    expect(page.locator("#error")).to_contain_text("invalid API key")

    tenant = make_tenant(admin, server)
    try:
        enter_key(page, tenant.api_key)  # type: ignore[attr-defined]
        expect(page.locator("#adapters-empty")).to_contain_text("No adapters yet")
        expect(page.locator("#error")).to_be_hidden()
        assert page.evaluate("localStorage.getItem('diffplex.apiKey')") == tenant.api_key  # type: ignore[attr-defined]

        # A generation of two images, its progress followed over server-sent events.
        page.evaluate(WATCH_PROGRESS)
        page.fill("#prompt", PROMPT)
        page.fill("#size", SIZE)
        page.fill("#steps", str(STEPS))
        page.fill("#n", "2")
        page.fill("#seed", str(SEED))
        page.select_option("#sampler", "euler")
        page.click("#generate")
        expect(page.locator(".run .result")).to_have_count(2)
        seen = page.evaluate("window.progressSeen")
        fractions = [value / high for value, high in seen]
        assert fractions == sorted(fractions), seen
        assert seen[-1] == [2 * STEPS, 2 * STEPS], seen
        assert any(0 < value < high for value, high in seen), f"the bar never showed a step in between: {seen}"
        expect(page.locator("#progress-label")).to_contain_text("Done")
        captions = page.locator(".run .result figcaption")
        expect(captions.nth(0)).to_contain_text(f"seed {SEED}")
        expect(captions.nth(1)).to_contain_text(f"seed {SEED + 1}")
        expect(captions.nth(0).locator(".total")).to_have_text(re.compile(r"\d+\.\d\d s"))
        shown = shown_pixels(page, ".run .result img")
        assert [image.shape for image in shown] == [(64, 64, 3)] * 2
        expected = api_pixels(tenant, n=2, seed=SEED, sampler="euler")
        for got, want in zip(shown, expected, strict=True):
            assert np.abs(got - want).max() <= 1  # batch neighbours change float32 rounding only

        # An adapter uploaded from the page, switched on, and rendered next to its twin without it.
        page.fill("#upload-name", "striped")
        page.set_input_files(
            "#upload-file",
            files=[{"name": "striped.safetensors", "mimeType": "application/octet-stream", "buffer": lora_file(spec)}],
        )
        page.click("#upload")
        expect(page.locator("#upload-status")).to_contain_text("Uploaded striped")
        assert tenant.get("/v1/adapters/striped").json()["kind"] == "lora"
        row = page.locator('li[data-adapter="striped"]')
        expect(row.get_by_role("checkbox")).to_be_checked()
        row.locator('input[type="range"]').fill("0.8")
        page.fill("#n", "1")
        page.check("#compare")
        page.click("#generate")
        pair = page.locator(".run.compare .pair")
        expect(pair.locator(".result")).to_have_count(2)
        expect(pair.locator(".label")).to_have_text(["with striped 0.80", "without adapters"])
        expect(pair.locator(".seed")).to_have_text([f"seed {SEED}", f"seed {SEED}"])
        with_adapter, without = shown_pixels(page, ".run.compare .pair img")
        assert np.abs(without - shown[0]).max() <= 1, "the twin without adapters is the first run's seed-7 image"
        assert np.abs(with_adapter - without).mean() > 1, "the adapter changed nothing"
        (want,) = api_pixels(tenant, seed=SEED, sampler="euler", adapters=[{"name": "striped", "weight": 0.8}])
        assert np.abs(with_adapter - want).max() <= 1
        save_screenshot(page, "playground.png", tmp_path)

        # The API's own messages: a size the model cannot make, then a file that is no adapter.
        page.uncheck("#compare")
        page.fill("#size", "65x65")
        page.click("#generate")
        expect(page.locator("#error")).to_contain_text("Generation refused")
        expect(page.locator("#error-message")).to_contain_text("65 is not supported")
        expect(page.locator("#progress-label")).to_have_text("Failed")
        assert page.locator(".run").count() == 2  # nothing added for a refused request

        # A request honoured in part is run, and says so: a token no embedding defines, a size other than the
        # native one (the tiny test backbone's 16x16).
        page.fill("#size", "32x32")
        page.fill("#prompt", "a red <mystery> circle")
        page.click("#generate")
        warnings = page.locator(".run").first.locator(".warnings li")
        expect(warnings).to_have_count(2)
        expect(warnings.nth(0)).to_contain_text("<mystery>: not a token of any of your embeddings")
        expect(warnings.nth(1)).to_contain_text("size 32x32 is not the model's native 16x16")

        junk = b"this is not a safetensors file"
        page.fill("#upload-name", "junk")
        page.set_input_files("#upload-file", files=[{"name": "junk.safetensors", "mimeType": "x/y", "buffer": junk}])
        page.click("#upload")
        expect(page.locator("#error-title")).to_have_text("Upload refused")
        refused = tenant.put("/v1/adapters/junk", files={"file": ("junk.safetensors", junk)})
        assert 400 <= refused.status_code < 500
        expect(page.locator("#error-message")).to_have_text(refused.json()["error"]["message"])
        save_screenshot(page, "playground-error.png", tmp_path)
    finally:
        tenant.close()
