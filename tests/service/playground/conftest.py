"""A real server (the API tests' session fixtures, reused) and a headless Debian Chromium driven by
Playwright. Browser tests skip, saying why, where Chromium or Playwright is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.service.api.conftest import admin, server, spec  # noqa: F401 - fixtures, re-exported for this package

if TYPE_CHECKING:  # playwright is imported at run time only where it is installed
    from playwright.sync_api import Browser, Page

# Debian's package (deploy/ensure_chromium.sh installs it); Playwright drives it instead of downloading one.
CHROMIUM = os.environ.get("DIFFPLEX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / ".work" / "artifacts"
NO_PLAYWRIGHT = "playwright is not installed: pip install -e '.[dev]'"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: run `bash deploy/ensure_chromium.sh` (make test does) "
            "or point DIFFPLEX_CHROMIUM at one"
        )
    return CHROMIUM


@pytest.fixture(scope="module")  # the sync API holds an event loop on this thread while it lives
def browser(chromium_path: str) -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty localStorage); an uncaught script error fails the test that met it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not script_errors, f"uncaught errors in the page's scripts: {script_errors}"
