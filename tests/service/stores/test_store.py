"""One suite, both stores: the LocalStore on a temporary directory and the RedisStore on the real server
(DB 15, a unique key prefix deleted afterwards). A deleted tenant's jobs and files are gone, and a late write
for it is refused, even once a tenant of the same name exists again (stores/base.py: epochs)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.stores import (
    AdapterMeta,
    Conflict,
    JobRecord,
    LocalStore,
    NotFound,
    Quota,
    QuotaExceeded,
    RedisStore,
    Store,
    TenantGone,
)
from service.tenants import keys

REDIS_URL = "redis://127.0.0.1:6379/15"
QUOTA = Quota(max_count=3, max_bytes=100)


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        local = LocalStore(tmp_path / "data")
        yield local
        local.close()
        return
    if not _redis_available():
        pytest.fail("Redis does not answer on 127.0.0.1:6379: run `make redis`")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    remote = RedisStore(REDIS_URL, prefix)
    yield remote
    remote.close()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def meta(name: str, size: int = 10, sha: str = "a" * 64, **kw: object) -> AdapterMeta:
    return AdapterMeta(name=name, kind="lora", size=size, sha256=sha, **kw)


def job_of(store: Store, tenant: str, job_id: str, **kw: object) -> JobRecord:
    """A job record of the tenant's current incarnation (the tenant is created if missing)."""
    record = store.get_tenant(tenant)
    if record is None:
        store.create_tenant(tenant)
        record = store.get_tenant(tenant)
    assert record is not None
    return JobRecord(id=job_id, tenant=tenant, epoch=record.epoch, **kw)


def stored_mentions(store: Store, *words: str) -> list[str]:
    """Every file path or Redis key naming one of `words`, and every unfinished-jobs entry that is one."""
    if isinstance(store, LocalStore):
        return [str(p) for p in store.root.rglob("*") if any(w in p.name for w in words)]
    assert isinstance(store, RedisStore)
    found = [k.decode() for k in store.client.scan_iter(f"{store.prefix}*") if any(w in k.decode() for w in words)]
    return found + [w for w in words if store.client.zscore(store.k("jobs", "open"), w) is not None]


def test_tenant_keys_authenticate_and_are_never_stored_in_plaintext(store: Store, tmp_path: Path) -> None:
    key = store.create_tenant("acme")
    assert key.startswith("dpx_")
    assert store.authenticate(key) == store.get_tenant("acme")  # the incarnation: name and epoch
    assert store.authenticate(key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert store.authenticate("dpx_nonsense") is None
    assert store.authenticate("") is None
    with pytest.raises(Conflict):
        store.create_tenant("acme")
    assert [t.name for t in store.list_tenants()] == ["acme"]
    secret = key.rsplit("_", 1)[1]
    if isinstance(store, LocalStore):
        blobs = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    else:
        blobs = b"".join(str(store.client.hgetall(k)).encode() for k in store.client.scan_iter(f"{store.prefix}key:*"))
    assert secret.encode() not in blobs


def test_deleting_a_tenant_revokes_its_key_and_adapters(store: Store) -> None:
    key = store.create_tenant("acme")
    store.put_adapter("acme", meta("a"), b"blob", QUOTA)
    seen: list[tuple[str, str]] = []
    store.subscribe(lambda t, n: seen.append((t, n)))
    assert store.delete_tenant("acme")
    assert not store.delete_tenant("acme")
    assert store.authenticate(key) is None
    assert store.list_adapters("acme") == []
    assert store.adapter_blob("acme", "a", "a" * 64) is None
    _wait_for(lambda: ("acme", "a") in seen)


def test_adapters_are_per_tenant_and_versioned_by_sha(store: Store) -> None:
    store.create_tenant("a")
    store.create_tenant("b")
    assert store.put_adapter("a", meta("style", sha="1" * 64), b"one", QUOTA) is None
    previous = store.put_adapter("a", meta("style", sha="2" * 64), b"two", QUOTA)
    assert previous is not None and previous.sha256 == "1" * 64
    assert store.adapter_blob("a", "style", "2" * 64) == b"two"
    assert store.adapter_blob("a", "style", "1" * 64) is None  # the replaced version is gone
    assert store.get_adapter("b", "style") is None
    assert store.adapter_blob("b", "style", "2" * 64) is None
    assert [m.name for m in store.list_adapters("a")] == ["style"]
    assert store.list_adapters("b") == []
    assert store.delete_adapter("a", "style")
    assert not store.delete_adapter("a", "style")
    assert store.get_adapter("a", "style") is None


def test_put_adapter_for_a_missing_tenant_fails(store: Store) -> None:
    with pytest.raises(NotFound):
        store.put_adapter("ghost", meta("x"), b"x", QUOTA)


def test_quota_counts_and_bytes_and_a_replacement_frees_its_own_bytes(store: Store) -> None:
    store.create_tenant("a")
    store.put_adapter("a", meta("one", size=40), b"1", QUOTA)
    store.put_adapter("a", meta("two", size=40), b"2", QUOTA)
    with pytest.raises(QuotaExceeded, match="100"):
        store.put_adapter("a", meta("three", size=30), b"3", QUOTA)
    store.put_adapter("a", meta("two", size=60, sha="b" * 64), b"2", QUOTA)  # 40 + 60 fits
    store.put_adapter("a", meta("three", size=0), b"", QUOTA)
    with pytest.raises(QuotaExceeded, match="limit is 3"):
        store.put_adapter("a", meta("four", size=0), b"", QUOTA)


def test_concurrent_uploads_never_exceed_the_quota(store: Store) -> None:
    store.create_tenant("a")
    errors: list[Exception] = []

    def upload(i: int) -> None:
        try:
            store.put_adapter("a", meta(f"n{i}", size=30), b"x", QUOTA)
        except QuotaExceeded as e:
            errors.append(e)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_adapters("a")) == 3 and len(errors) == 5


def test_change_notifications_reach_subscribers_until_they_unsubscribe(store: Store) -> None:
    store.create_tenant("a")
    seen: list[tuple[str, str]] = []
    unsubscribe = store.subscribe(lambda t, n: seen.append((t, n)))
    time.sleep(0.2)  # a Redis subscription is live once the listener thread has subscribed
    store.put_adapter("a", meta("x"), b"x", QUOTA)
    _wait_for(lambda: ("a", "x") in seen)
    store.delete_adapter("a", "x")
    _wait_for(lambda: seen.count(("a", "x")) == 2)
    unsubscribe()
    store.put_adapter("a", meta("y"), b"y", QUOTA)
    time.sleep(0.3)
    assert ("a", "y") not in seen


def test_jobs_are_scoped_to_their_tenant_and_cancellable(store: Store) -> None:
    store.create_tenant("b")
    job = job_of(store, "a", "j1", request={"prompt": "p"}, owner="r1")
    store.put_job(job, ttl_s=60)
    assert store.get_job("a", "j1") == job
    assert store.get_job("b", "j1") is None
    assert store.get_job("a", "nope") is None
    assert store.request_cancel("b", "j1") is None
    cancelled = store.request_cancel("a", "j1")
    assert cancelled is not None and cancelled.cancel_requested
    assert store.get_job("a", "j1").cancel_requested  # type: ignore[union-attr]


def test_jobs_expire(store: Store) -> None:
    store.put_job(job_of(store, "a", "short"), ttl_s=1)
    assert store.get_job("a", "short") is not None
    time.sleep(2.1)
    assert store.get_job("a", "short") is None


def test_stale_jobs_are_claimed_once_and_finished_ones_never(store: Store) -> None:
    old = time.time() - 100
    store.put_job(job_of(store, "a", "stale", owner="dead", heartbeat=old), ttl_s=60)
    store.put_job(job_of(store, "a", "done", owner="dead", heartbeat=old, status="succeeded"), ttl_s=60)
    store.put_job(job_of(store, "a", "alive", owner="live"), ttl_s=60)
    claimed = store.claim_stale_jobs("me", stale_after_s=30, ttl_s=60)
    assert [j.id for j in claimed] == ["stale"] and claimed[0].owner == "me"
    assert store.claim_stale_jobs("other", stale_after_s=30, ttl_s=60) == []
    assert store.get_job("a", "stale").owner == "me"  # type: ignore[union-attr]


def test_files_are_scoped_and_expire(store: Store) -> None:
    store.create_tenant("a")
    store.create_tenant("b")
    store.put_file("a", "f1", b"png", ttl_s=1)
    assert store.get_file("a", "f1") == b"png"
    assert store.get_file("b", "f1") is None
    time.sleep(2.1)
    assert store.get_file("a", "f1") is None


def test_deleting_a_tenant_removes_its_jobs_and_files_and_a_new_one_of_that_name_sees_none(store: Store) -> None:
    kept = job_of(store, "other", "job_kept")
    store.put_job(kept, ttl_s=60)
    store.put_file("other", "img_kept", b"theirs", ttl_s=60)
    old = job_of(store, "acme", "job_old", request={"prompt": "secret"}, owner="r1")
    store.put_job(old, ttl_s=60)
    store.put_job(job_of(store, "acme", "job_done", status="succeeded"), ttl_s=60)
    store.put_file("acme", "img_old", b"secret png", ttl_s=60)
    assert store.rate_hit("acme", limit=5, epoch=old.epoch) == 0  # its rate counter goes too
    assert store.get_job("acme", "job_old") == old and store.get_file("acme", "img_old") == b"secret png"

    assert store.delete_tenant("acme")
    assert stored_mentions(store, "acme", "job_old", "job_done", "img_old", old.epoch) == []  # nothing kept
    store.create_tenant("acme")
    new = store.get_tenant("acme")
    assert new is not None and new.epoch != old.epoch
    assert store.get_job("acme", "job_old") is None and store.get_job("acme", "job_done") is None
    assert store.get_file("acme", "img_old") is None
    assert store.request_cancel("acme", "job_old") is None
    assert [j.id for j in store.claim_stale_jobs("me", stale_after_s=0, ttl_s=60)] == ["job_kept"]  # not old's
    assert store.get_file("other", "img_kept") == b"theirs"
    theirs = store.get_job("other", "job_kept")
    assert theirs is not None and theirs.model_copy(update={"owner": "", "heartbeat": kept.heartbeat}) == kept


def test_late_writes_for_a_deleted_tenant_are_refused_after_it_is_created_again(store: Store) -> None:
    store.put_job(job_of(store, "acme", "job_run"), ttl_s=60)
    store.put_job(job_of(store, "acme", "job_queued"), ttl_s=60)
    running = store.claim_job("acme", "job_run", "worker-a", ttl_s=60)  # a worker runs it as the tenant goes
    assert running is not None
    assert store.delete_tenant("acme")
    store.create_tenant("acme")  # perhaps another customer

    with pytest.raises(TenantGone):
        store.save_progress(running.model_copy(update={"status": "running", "step": 1}), ttl_s=60)
    with pytest.raises(TenantGone):
        store.put_file("acme", "img_late", b"late png", ttl_s=60, epoch=running.epoch)
    with pytest.raises(TenantGone):
        store.complete_job(running.model_copy(update={"status": "succeeded", "result": {"data": []}}), ttl_s=60)
    with pytest.raises(TenantGone):
        store.put_job(running, ttl_s=60)
    assert store.claim_job("acme", "job_queued", "worker-b", ttl_s=60) is None  # its record went with the tenant
    for job_id in ("job_run", "job_queued"):
        assert store.get_job("acme", job_id) is None
    assert store.get_file("acme", "img_late") is None
    assert stored_mentions(store, "job_run", "job_queued", "img_late", running.epoch) == []  # nothing written

    mine = job_of(store, "acme", "job_mine")  # the new tenant works as usual
    store.put_job(mine, ttl_s=60)
    store.put_file("acme", "img_mine", b"mine", ttl_s=60)
    assert store.get_job("acme", "job_mine") == mine and store.get_file("acme", "img_mine") == b"mine"


def test_writes_with_the_epoch_a_request_authenticated_with_are_refused_once_it_is_created_again(
    store: Store,
) -> None:
    """A request authenticates, its tenant is deleted and created again, then the request writes its job and
    its image with the epoch of its authentication: refused, and nothing lands in the new tenant."""
    key = store.create_tenant("acme")
    caller = store.authenticate(key)
    assert caller is not None
    assert store.delete_tenant("acme")
    store.create_tenant("acme")

    with pytest.raises(TenantGone, match="tenant 'acme' does not exist"):  # the missing tenant's message
        store.put_job(JobRecord(id="job_late", tenant=caller.name, epoch=caller.epoch), ttl_s=60)
    with pytest.raises(TenantGone, match="tenant 'acme' does not exist"):
        store.put_file(caller.name, "img_late", b"late png", ttl_s=60, epoch=caller.epoch)
    assert store.get_job("acme", "job_late") is None and store.get_file("acme", "img_late") is None
    assert stored_mentions(store, "job_late", "img_late", caller.epoch) == []


def test_adapters_of_one_incarnation_are_out_of_reach_of_another(store: Store) -> None:
    """A request authenticated as the old incarnation cannot write, delete, read or plan with the adapters
    of a tenant created again under the same name, and the new tenant's requests never see the old ones'."""
    caller = store.authenticate(store.create_tenant("acme"))
    assert caller is not None
    store.put_adapter("acme", meta("old"), b"old", QUOTA, epoch=caller.epoch)
    assert [(m.name, m.epoch) for m in store.list_adapters("acme", caller.epoch)] == [("old", caller.epoch)]
    assert store.delete_tenant("acme")
    new = store.authenticate(store.create_tenant("acme"))
    assert new is not None
    store.put_adapter("acme", meta("style"), b"new", QUOTA, epoch=new.epoch)

    with pytest.raises(TenantGone, match="tenant 'acme' does not exist"):
        store.put_adapter("acme", meta("late", sha="9" * 64), b"late", QUOTA, epoch=caller.epoch)
    with pytest.raises(TenantGone):
        store.delete_adapter("acme", "style", epoch=caller.epoch)
    assert store.list_adapters("acme", caller.epoch) == [] and store.get_adapter("acme", "style", caller.epoch) is None
    assert [m.name for m in store.list_adapters("acme", new.epoch)] == ["style"]
    assert store.get_adapter("acme", "late") is None and store.adapter_blob("acme", "late", "9" * 64) is None
    assert store.delete_adapter("acme", "style", epoch=new.epoch)


def test_adapters_stored_before_epochs_stay_visible_to_the_current_incarnation(store: Store) -> None:
    caller = store.authenticate(store.create_tenant("acme"))
    assert caller is not None
    store.put_adapter("acme", meta("legacy"), b"x", QUOTA)
    if isinstance(store, LocalStore):  # as a store written before adapters carried an epoch holds it
        path = store._adapter_path("acme", "legacy", "json")
        path.write_text(meta("legacy").model_dump_json(exclude={"epoch"}))
    else:
        assert isinstance(store, RedisStore)
        store.client.hset(store.k("adapters", "acme"), "legacy", meta("legacy").model_dump_json(exclude={"epoch"}))
    assert [m.name for m in store.list_adapters("acme", caller.epoch)] == ["legacy"]
    assert store.delete_adapter("acme", "legacy", epoch=caller.epoch)


def test_writes_for_a_tenant_that_does_not_exist_are_refused(store: Store) -> None:
    with pytest.raises(TenantGone):
        store.put_job(JobRecord(id="job_x", tenant="ghost"), ttl_s=60)
    with pytest.raises(TenantGone):
        store.put_file("ghost", "img_x", b"x", ttl_s=60)
    assert store.get_job("ghost", "job_x") is None and store.get_file("ghost", "img_x") is None


def test_a_key_left_behind_by_a_deleted_tenant_does_not_open_a_new_one_of_that_name(store: Store) -> None:
    key = store.create_tenant("acme")
    key_id = keys.split_key(key)[0]  # type: ignore[index]
    if isinstance(store, LocalStore):
        path = store.root / "keys" / f"{key_id}.json"
        saved = path.read_bytes()
    else:
        assert isinstance(store, RedisStore)
        saved_hash = store.client.hgetall(store.k("key", key_id))
    assert store.delete_tenant("acme")
    store.create_tenant("acme")
    if isinstance(store, LocalStore):  # as a delete that crashed before removing the keys would leave it
        path.write_bytes(saved)
    else:
        store.client.hset(store.k("key", key_id), mapping=saved_hash)
    assert store.authenticate(key) is None


def test_rate_limit_counts_per_tenant_per_window(store: Store) -> None:
    assert all(store.rate_hit("a", limit=3) == 0 for _ in range(3))
    retry = store.rate_hit("a", limit=3)
    assert 0 < retry <= 60
    assert store.rate_hit("b", limit=3) == 0
    # a request of another incarnation of "a" (deleted and created again) has a window of its own
    assert store.rate_hit("a", limit=3, epoch="0123456789abcdef") == 0
    assert store.rate_hit("a", limit=3) > 0
    assert store.ping()


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
