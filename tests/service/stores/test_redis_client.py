"""The Redis store's client against a private `redis-server` (its own port; the shared one is never stopped): a
killed Redis fails a command at once, a frozen one within the configured timeout, and the same store object
works again by itself once Redis is back. A stream worker's client outwaits its own XREADGROUP block."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.core.settings import RedisClientSettings, Settings
from service.stores import RedisStore, open_store
from service.stores.job_stream import JobStream
from tests.service.reliability.redis_process import RedisProcess

OPTIONS = RedisClientSettings(connect_timeout_s=1.0, timeout_s=1.0)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path / "redis")
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def store(private_redis: RedisProcess) -> Iterator[RedisStore]:
    store = RedisStore(private_redis.url, f"t-{uuid.uuid4().hex[:8]}:", OPTIONS)
    store.create_tenant("acme")  # files are stored for an existing tenant only
    store.put_file("acme", "f1", b"png", ttl_s=600)  # a pooled connection exists when the fault comes
    yield store
    store.close()


def test_a_killed_redis_fails_at_once_and_the_store_recovers_by_itself(
    private_redis: RedisProcess, store: RedisStore
) -> None:
    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.get_file("acme", "f1")
    assert time.monotonic() - started < OPTIONS.connect_timeout_s  # refused: no timeout to wait out
    assert not store.ping()

    private_redis.start()  # same port and append-only file
    assert store.get_file("acme", "f1") == b"png"  # no new store, no error: it reconnected


def test_a_frozen_redis_fails_within_the_timeout_and_is_not_retried(
    private_redis: RedisProcess, store: RedisStore
) -> None:
    private_redis.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            store.get_file("acme", "f1")
        took = time.monotonic() - started
        # at least the timeout (it did wait), below two (a retry would wait it out again)
        assert OPTIONS.timeout_s * 0.9 <= took < 2 * OPTIONS.timeout_s, took
        started = time.monotonic()
        assert not store.ping()  # what /readyz asks
        assert time.monotonic() - started < 2 * OPTIONS.timeout_s
    finally:
        private_redis.thaw()
    assert store.get_file("acme", "f1") == b"png"


def test_a_stream_worker_outwaits_its_xreadgroup_block(private_redis: RedisProcess) -> None:
    """XREADGROUP answers only after `block_ms`: a worker's client must wait longer than that, an API's need not."""
    env = {"redis_url": private_redis.url, "redis_prefix": f"t-{uuid.uuid4().hex[:8]}:", "redis_client": OPTIONS}
    block_ms = int(OPTIONS.timeout_s * 1000) + 500
    worker = open_store(Settings(role="worker", worker={"block_ms": block_ms}, **env))
    api = open_store(Settings(role="api", **env))
    assert isinstance(worker, RedisStore) and isinstance(api, RedisStore)
    try:
        worker_stream, api_stream = JobStream(worker), JobStream(api)
        worker_stream.ensure_group()
        assert worker_stream.read("w1", count=1, block_ms=block_ms) == []  # an empty stream, waited out
        with pytest.raises(redis.TimeoutError):
            api_stream.read("w2", count=1, block_ms=block_ms)
    finally:
        worker.close()
        api.close()
