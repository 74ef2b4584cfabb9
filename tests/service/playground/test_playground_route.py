"""The page and its assets are served without a key; the API behind them still needs one."""

from __future__ import annotations

import httpx

from service.api.routes.playground import STATIC_DIR
from tests.service.api.server import Server
from tests.service.api.test_images import assert_error

TYPES = {".html": "text/html", ".css": "text/css", ".js": "javascript"}


def test_page_and_assets_are_public(server: Server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>diffplex playground</title>" in page.text
    assets = [p for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert {p.suffix for p in assets} == set(TYPES)
    for asset in assets:
        response = httpx.get(f"{server.url}/playground/{asset.relative_to(STATIC_DIR).as_posix()}")
        assert response.status_code == 200, (asset, response.text)
        assert response.content == asset.read_bytes()
        assert TYPES[asset.suffix] in response.headers["content-type"], (asset, response.headers["content-type"])


def test_the_api_still_needs_a_key(server: Server) -> None:
    assert_error(httpx.get(f"{server.url}/v1/adapters"), 401, "no API key")
    assert_error(httpx.post(f"{server.url}/v1/jobs", json={"prompt": "x"}), 401, "no API key")


def test_a_missing_asset_is_a_404_in_the_api_error_shape(server: Server) -> None:
    assert_error(httpx.get(f"{server.url}/playground/nope.js"), 404)
    assert_error(httpx.get(f"{server.url}/playground/../service/core/settings.py"), 404)
