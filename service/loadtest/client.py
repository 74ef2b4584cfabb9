"""The HTTP side: readiness, one generation request -> a Sample, the server's error messages."""

from __future__ import annotations

import asyncio
import time

import httpx

from service.loadtest.errors import LoadtestError
from service.loadtest.mix import Draw
from service.loadtest.stats import Sample

GENERATIONS = "/v1/images/generations"


def message_of(response: httpx.Response) -> str:
    """The API's `{"error": {"message"}}`, or the start of whatever else came back."""
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


def unreachable(url: str, error: httpx.TransportError) -> LoadtestError:
    reason = "connection refused" if isinstance(error, httpx.ConnectError) else type(error).__name__
    return LoadtestError(
        f"cannot reach the server at {url} ({reason}: {error}): start it (`diffplex serve`) or fix --url"
    )


async def wait_ready(client: httpx.AsyncClient, wait_s: float) -> dict:
    """GET /readyz until 200: a server that is still loading its model gets `wait_s` to finish."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = await client.get("/readyz")
        except httpx.TransportError as error:
            raise unreachable(str(client.base_url), error) from None
        if response.status_code == 200:
            return response.json()
        if response.status_code == 404:  # not a diffplex server (or a proxy without the route): go on
            return {}
        if time.monotonic() > deadline:
            raise LoadtestError(
                f"the server at {client.base_url} is not ready after {wait_s:.0f}s: {message_of(response)}"
            )
        await asyncio.sleep(1.0)


async def generate(client: httpx.AsyncClient, key: str, draw: Draw, level_start: float) -> Sample:
    """Send one request and record what happened; never raises for a failed request."""
    sent = time.perf_counter()
    sample = Sample(draw.tenant, draw.entry, sent - level_start, 0.0, None)
    try:
        response = await client.post(GENERATIONS, json=draw.body, headers={"Authorization": f"Bearer {key}"})
    except httpx.TransportError as error:
        sample.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        sample.status = response.status_code
        if response.status_code == 200:
            try:
                data = response.json()["data"]
                sample.timings = [dict(item.get("timings", {})) for item in data]
                sample.images = len(data)
            except (ValueError, KeyError, TypeError, AttributeError):
                sample.error = f"a 200 answer that is not the images JSON: {response.text[:200]!r}"
        else:
            sample.error = message_of(response)
    sample.latency_s = time.perf_counter() - sent
    return sample
