"""Malicious and broken adapter files uploaded over HTTP (`PUT /v1/adapters/{name}`): each is refused with a
4xx saying what is wrong, no payload runs, nothing is stored, and the server stays healthy (alive, still
generating, its memory not blown up by a bomb)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from adapters.spec import BackboneSpec
from tests.service.api.server import Server
from tests.service.api.test_images import FAST, assert_error
from tests.service.reliability.bad_adapters import BAD_FILES, BadFile
from tests.service.reliability.conftest import MAX_UPLOAD_BYTES, MiB, client_for, data_dir, new_tenant
from tests.service.reliability.figures import record
from tests.service.reliability.process import RssSampler, rss_mib

RSS_SLACK_MIB = 128  # the zip bomb alone inflates to 256 MiB if it is ever opened


@contextmanager
def tenant(server: Server) -> Iterator[httpx.Client]:
    name, key = new_tenant(server, "mallory")
    with client_for(server, key) as client:
        client.tenant = name  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def mallory(shared_server: Server) -> Iterator[httpx.Client]:
    """A new tenant per test: the catalogue is longer than a tenant's upload rate (30 a minute) allows."""
    with tenant(shared_server) as client:
        yield client


def upload(client: httpx.Client, bad: BadFile, data: bytes) -> httpx.Response:
    return client.put(f"/v1/adapters/{bad.id}", files={"file": (f"{bad.id}.bin", data)}, data=bad.form)


def assert_nothing_stored(client: httpx.Client, server: Server) -> None:
    assert client.get("/v1/adapters").json()["data"] == []
    stored = data_dir(server) / "adapters" / client.tenant  # type: ignore[attr-defined]
    assert not stored.exists() or not any(stored.iterdir()), sorted(p.name for p in stored.iterdir())


@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.id for b in BAD_FILES])
def test_each_bad_file_is_refused_with_its_reason(
    bad: BadFile, mallory: httpx.Client, shared_server: Server, spec: BackboneSpec, tmp_path: Path
) -> None:
    sentinel = tmp_path / "payload-ran"  # a payload that runs creates it (the server shares this filesystem)
    assert_error(upload(mallory, bad, bad.build(spec, sentinel)), bad.status, *bad.words)
    assert not sentinel.exists()
    assert_nothing_stored(mallory, shared_server)


def test_oversize_uploads_are_refused(mallory: httpx.Client, shared_server: Server) -> None:
    over_the_cap = BadFile("over-the-cap", lambda *_: b"", ())
    just_over = bytes(MAX_UPLOAD_BYTES + 1024)  # within the body cap (+1 MiB for the form): the route refuses
    assert_error(upload(mallory, over_the_cap, just_over), 413, "larger than")
    # past the body cap (upload cap + 1 MiB): the middleware refuses it from its Content-Length, unread
    far_over = bytes(MAX_UPLOAD_BYTES + MiB + 64 * 1024)
    assert_error(upload(mallory, over_the_cap, far_over), 413, "larger than")
    assert_nothing_stored(mallory, shared_server)


def test_the_server_stays_healthy_through_every_attack(
    mallory: httpx.Client, shared_server: Server, spec: BackboneSpec, tmp_path: Path
) -> None:
    pid = shared_server.process.pid
    ok = mallory.post("/v1/images/generations", json={"prompt": "a red circle", **FAST})
    assert ok.status_code == 200, ok.text  # warm: what follows measures the attacks, not the first request
    files = [(bad, bad.build(spec, tmp_path / "payload-ran")) for bad in BAD_FILES]
    with RssSampler(pid) as rss:
        for bad, data in files:
            with tenant(shared_server) as uploader:  # one each, under the per-tenant upload rate
                assert upload(uploader, bad, data).status_code == bad.status, bad.id
                assert_nothing_stored(uploader, shared_server)
    assert httpx.get(f"{shared_server.url}/livez").json() == {"status": "ok"}
    assert httpx.get(f"{shared_server.url}/readyz").status_code == 200
    after = mallory.post("/v1/images/generations", json={"prompt": "a red circle", **FAST})
    assert after.status_code == 200, after.text
    assert not (tmp_path / "payload-ran").exists()
    assert_nothing_stored(mallory, shared_server)
    growth = rss.peak_mib - rss.start_mib
    record(
        "malicious_adapters",
        files=len(files),
        rss_start_mib=round(rss.start_mib, 1),
        rss_peak_mib=round(rss.peak_mib, 1),
        rss_end_mib=round(rss_mib(pid), 1),
    )
    assert growth < RSS_SLACK_MIB, f"RSS grew {growth:.0f} MiB while refusing bad files"
