"""The origin the service hands out in image URLs: configured, or this server's own, never a client's Host."""

from __future__ import annotations

import pytest

from service.core.settings import Settings


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"host": "0.0.0.0", "port": 9000}, "http://localhost:9000"),  # all interfaces: not an address to give out
        ({"host": "::1"}, "http://[::1]:8000"),
        ({"http": {"public_base_url": "https://images.example.com/"}}, "https://images.example.com"),
    ],
)
def test_public_base_url(settings: dict, expected: str) -> None:
    assert Settings(**settings).public_base_url() == expected
