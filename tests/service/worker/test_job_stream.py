"""The job stream (real Redis, DB 14, a unique prefix) and the conditional job writes (both stores) that make a
job complete exactly once when a worker presumed dead comes back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.stores import JobRecord, LocalStore, RedisStore, Store
from service.stores.job_stream import JobStream
from tests.service.worker.cluster import REDIS_URL

TTL = 600


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    store = RedisStore(REDIS_URL, prefix)
    yield store
    store.close()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, redis_store: RedisStore) -> Store:
    return LocalStore(tmp_path) if request.param == "local" else redis_store


def queued(store: Store, job_id: str = "job_1") -> JobRecord:
    """A new job of tenant "acme" (created on first use: a job carries its tenant's epoch)."""
    tenant = store.get_tenant("acme")
    if tenant is None:
        store.create_tenant("acme")
        tenant = store.get_tenant("acme")
    assert tenant is not None
    return JobRecord(id=job_id, tenant="acme", epoch=tenant.epoch, request={"params": {"prompt": "x"}})


def test_a_reclaimed_job_completes_once(store: Store) -> None:
    store.put_job(queued(store), TTL)
    first = store.claim_job("acme", "job_1", "worker-a", TTL)
    assert first is not None and first.owner == "worker-a" and first.attempts == 1
    second = store.claim_job("acme", "job_1", "worker-b", TTL)  # a's entry was reclaimed: b runs it again
    assert second is not None and second.owner == "worker-b" and second.attempts == 2

    stale = first.model_copy(update={"status": "running", "step": 3})
    seen = store.save_progress(stale, TTL)  # a comes back: its heartbeat is refused, it learns it lost the job
    assert seen.owner == "worker-b" and store.get_job("acme", "job_1").step == 0  # type: ignore[union-attr]
    assert not store.complete_job(stale.model_copy(update={"status": "failed"}), TTL)  # no failing b's job

    done = second.model_copy(update={"status": "succeeded", "result": {"data": ["b"]}})
    assert store.complete_job(done, TTL)
    assert not store.complete_job(stale.model_copy(update={"status": "succeeded", "result": {"data": ["a"]}}), TTL)
    final = store.get_job("acme", "job_1")
    assert final is not None and final.result == {"data": ["b"]}
    assert store.save_progress(second, TTL).terminal  # a heartbeat never reopens a finished job
    assert store.claim_job("acme", "job_1", "worker-c", TTL).owner == "worker-b"  # type: ignore[union-attr]
    assert store.claim_job("other", "job_1", "worker-c", TTL) is None  # another tenant's: not found


def test_progress_keeps_a_cancel_made_elsewhere(store: Store) -> None:
    store.put_job(queued(store), TTL)
    mine = store.claim_job("acme", "job_1", "worker-a", TTL)
    assert mine is not None
    store.request_cancel("acme", "job_1")
    seen = store.save_progress(mine.model_copy(update={"status": "running", "step": 1}), TTL)
    assert seen.cancel_requested and seen.step == 1
    assert store.get_job("acme", "job_1").cancel_requested  # type: ignore[union-attr]


def test_a_recorded_cancel_decides_how_the_job_ends_and_is_announced(store: Store) -> None:
    """DELETE answers "cancelled" (or "cancelling") once the cancel is recorded: whatever the runner writes after
    it, its result or a failure, the job ends cancelled; and every subscriber hears of the cancel at once."""
    heard: list[str] = []
    store.subscribe_cancels(heard.append)
    for job_id, late in (("job_1", "succeeded"), ("job_2", "failed")):
        store.put_job(queued(store, job_id), TTL)
        mine = store.claim_job("acme", job_id, "worker-a", TTL)
        assert mine is not None
        assert store.request_cancel("acme", job_id).cancel_requested  # type: ignore[union-attr]
        ended = mine.model_copy(
            update={"status": late, "step": 2, "result": {"data": ["x"]} if late == "succeeded" else None}
        )
        assert store.complete_job(ended, TTL)  # final afterwards: its stream entry may be acknowledged
        final = store.get_job("acme", job_id)
        assert final is not None and (final.status, final.result, final.step) == ("cancelled", None, 2)
        assert final.error is not None and final.error["code"] == "cancelled"
    deadline = time.monotonic() + 5  # Redis pub/sub: delivered on the store's listener thread
    while len(heard) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heard == ["job_1", "job_2"]
    assert store.request_cancel("acme", "job_1").status == "cancelled"  # type: ignore[union-attr]
    time.sleep(0.2)
    assert heard == ["job_1", "job_2"]  # a finished job's cancel changes nothing and is not announced


def test_stream_delivery_touch_reclaim_ack_and_release(redis_store: RedisStore) -> None:
    stream = JobStream(redis_store)
    stream.ensure_group()
    stream.ensure_group()  # idempotent: every replica calls it
    entry = stream.enqueue(queued(redis_store, "job_s"), TTL)
    assert redis_store.get_job("acme", "job_s") is not None  # record and entry written together
    assert stream.backlog() == 1
    (delivery,) = stream.read("a", count=5, block_ms=100)
    assert (delivery.entry_id, delivery.job_id, delivery.tenant) == (entry, "job_s", "acme")
    assert stream.pending() == 1 and stream.backlog() == 0
    assert stream.read("b", count=5, block_ms=50) == []  # delivered once

    time.sleep(0.3)
    stream.touch("a", [entry])  # a is alive: its entry is not idle enough to take
    assert stream.reclaim("b", min_idle_s=0.25, count=5) == []
    time.sleep(0.3)  # a went silent
    (taken,) = stream.reclaim("b", min_idle_s=0.25, count=5)
    assert taken.job_id == "job_s"
    stream.ack(taken.entry_id)
    assert stream.pending() == 0

    stream.enqueue(queued(redis_store, "job_t"), TTL)
    unstarted = stream.read("a", count=5, block_ms=100)
    stream.release(unstarted)  # a drains: handed back at once, not after the stale timeout
    assert stream.pending() == 0 and stream.backlog() == 1
    assert [d.job_id for d in stream.read("b", count=5, block_ms=100)] == ["job_t"]
