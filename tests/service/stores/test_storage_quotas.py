"""Per-tenant storage quotas (job records and url files, by count and bytes) and unfinished work, both stores:
the LocalStore on a temporary directory and the RedisStore on the real server (DB 15, a unique key prefix deleted
afterwards). Two store objects on the same state stand for two replicas (or two processes sharing a directory)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from service.core.settings import Limits, Settings
from service.jobs.manager import JobManager
from service.stores import (
    JobRecord,
    LocalStore,
    QuotaExceeded,
    RedisStore,
    StorageQuota,
    Store,
    TenantGone,
    WorkCapExceeded,
)
from service.stores.job_stream import JobStream
from service.stores.usage import record_bytes
from tests.service.stores.test_store import REDIS_URL, _redis_available, job_of, stored_mentions

QUOTA = StorageQuota(max_jobs=3, max_files=3, max_file_bytes=100)
TTL = 60
WRITERS = 16


@pytest.fixture(params=["local", "redis"])
def open_replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Opens another store on the same state, with QUOTA or the quota it is given."""
    if request.param == "redis" and not _redis_available():
        pytest.fail("Redis does not answer on 127.0.0.1:6379: run `make redis`")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    opened: list[Store] = []

    def open_one(quota: StorageQuota = QUOTA) -> Store:
        one = (
            LocalStore(tmp_path / "data", quota)
            if request.param == "local"
            else RedisStore(REDIS_URL, prefix, quota=quota)
        )
        opened.append(one)
        return one

    yield open_one
    for one in opened:
        one.close()
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


@pytest.fixture
def store(open_replica: Callable[..., Store]) -> Store:
    return open_replica()


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[RedisStore]:
    if not _redis_available():
        pytest.fail("Redis does not answer on 127.0.0.1:6379: run `make redis`")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    store = RedisStore(REDIS_URL, prefix, quota=QUOTA)
    yield store
    for key in store.client.scan_iter(f"{prefix}*"):
        store.client.delete(key)
    store.close()


def test_job_records_are_capped_per_tenant_and_the_refusal_says_why(store: Store) -> None:
    for i in range(3):
        store.create_job(job_of(store, "a", f"job_{i}"), TTL)
    with pytest.raises(QuotaExceeded) as refused:
        store.create_job(job_of(store, "a", "job_3"), TTL)
    message = str(refused.value)
    assert "you have 3 job records stored and the limit is 3" in message, message
    assert "kept 60 s" in message and "the oldest expires in 60 s" in message, message
    assert store.get_job("a", "job_3") is None  # nothing written
    assert store.usage("a").jobs == 3
    store.create_job(job_of(store, "a", "job_2"), TTL)  # a retried write of a job it holds is not a new one
    store.put_job(job_of(store, "a", "job_1", status="running", step=1), TTL)  # an accepted job's writes go on
    store.create_job(job_of(store, "b", "job_b"), TTL)  # another tenant has its own quota
    assert store.usage("b").jobs == 1


def test_files_are_capped_by_count_and_bytes_all_or_none(store: Store) -> None:
    store.create_tenant("a")
    store.put_files("a", {"img_1": b"x" * 30, "img_2": b"x" * 30}, TTL)
    with pytest.raises(QuotaExceeded) as by_count:  # 2 + 2 > 3 files
        store.put_files("a", {"img_3": b"x", "img_4": b"x"}, TTL)
    assert "you have 2 url images stored and the limit is 3" in str(by_count.value)
    assert "b64_json" in str(by_count.value) and "the oldest expires in" in str(by_count.value)
    assert store.get_file("a", "img_3") is None and store.get_file("a", "img_4") is None  # none of the two
    with pytest.raises(QuotaExceeded) as by_bytes:  # 60 + 50 > 100 bytes
        store.put_file("a", "img_5", b"x" * 50, TTL)
    assert "your url images take 60 bytes and the limit is 100" in str(by_bytes.value)
    assert "this request's 50 bytes more" in str(by_bytes.value)
    assert store.get_file("a", "img_5") is None
    store.put_file("a", "img_6", b"x" * 40, TTL)  # exactly at both caps
    usage = store.usage("a")
    assert (usage.files, usage.file_bytes) == (3, 100)
    store.create_tenant("b")
    store.put_file("b", "img_b", b"x" * 100, TTL)  # another tenant has its own quota


def test_expiry_frees_room(store: Store) -> None:
    for i in range(3):
        store.create_job(job_of(store, "a", f"job_{i}"), ttl_s=1)
    store.put_files("a", {"img_1": b"x" * 60, "img_2": b"x" * 40}, ttl_s=1)
    with pytest.raises(QuotaExceeded):
        store.create_job(job_of(store, "a", "job_3"), TTL)
    with pytest.raises(QuotaExceeded):
        store.put_file("a", "img_3", b"x", TTL)
    time.sleep(2.1)
    assert store.usage("a").model_dump(exclude={"jobs_free_at", "files_free_at"}) == {
        "jobs": 0,
        "job_bytes": 0,
        "unfinished_work": 0,
        "files": 0,
        "file_bytes": 0,
    }
    for i in range(3, 6):
        store.create_job(job_of(store, "a", f"job_{i}"), TTL)
    store.put_files("a", {"img_3": b"x" * 60, "img_4": b"x" * 40}, TTL)
    assert store.get_job("a", "job_5") is not None and store.get_file("a", "img_4") == b"x" * 40


def test_deleting_a_tenant_clears_its_bookkeeping(store: Store) -> None:
    for i in range(3):
        store.create_job(job_of(store, "acme", f"job_{i}", total=10), TTL)
    store.put_files("acme", {"img_1": b"x" * 60}, TTL)
    old = store.get_tenant("acme")
    assert old is not None and store.usage("acme").unfinished_work == 30
    assert store.delete_tenant("acme")
    assert stored_mentions(store, "acme", old.epoch) == []  # no index, counter or usage file left
    assert store.usage("acme", old.epoch).jobs == 0
    store.create_tenant("acme")
    assert store.usage("acme").model_dump(exclude_none=True) == {
        "jobs": 0,
        "job_bytes": 0,
        "unfinished_work": 0,
        "files": 0,
        "file_bytes": 0,
    }
    for i in range(3):
        store.create_job(job_of(store, "acme", f"job_new_{i}"), TTL)
    store.put_files("acme", {"img_new": b"x" * 100}, TTL)


def test_concurrent_writers_on_two_replicas_never_pass_the_quota(open_replica: Callable[..., Store]) -> None:
    replicas = [open_replica(), open_replica()]
    for tenant in ("a", "b", "c", "d", "e", "f"):  # a few rounds: one lost race is enough to fail
        race(replicas, tenant)


def race(replicas: list[Store], tenant: str) -> None:
    """WRITERS threads over the replicas, each creating a job and storing a file at the same moment."""
    first = replicas[0]
    first.create_tenant(tenant)
    refused: list[Exception] = []
    jobs = [job_of(first, tenant, f"job_{i}") for i in range(WRITERS)]
    start = threading.Barrier(WRITERS)

    def write(i: int) -> None:
        replica = replicas[i % len(replicas)]
        start.wait()
        try:
            replica.create_job(jobs[i], TTL)
        except QuotaExceeded as error:
            refused.append(error)
        try:
            replica.put_file(tenant, f"img_{i}", b"x" * 10, TTL)
        except QuotaExceeded as error:
            refused.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored_jobs = [j.id for j in jobs if first.get_job(tenant, j.id) is not None]
    stored_files = [i for i in range(WRITERS) if first.get_file(tenant, f"img_{i}") is not None]
    assert len(stored_jobs) == 3 and len(stored_files) == 3, (stored_jobs, stored_files)
    assert len(refused) == 2 * (WRITERS - 3)
    usage = first.usage(tenant)
    assert (usage.jobs, usage.files, usage.file_bytes) == (3, 3, 30)


def test_unfinished_work_is_summed_until_the_jobs_finish_or_expire(store: Store) -> None:
    store.create_job(job_of(store, "a", "job_1", total=40), TTL, max_work=100)
    store.create_job(job_of(store, "a", "job_2", total=50), TTL, max_work=100)
    assert store.usage("a").unfinished_work == 90
    with pytest.raises(WorkCapExceeded) as busy:
        store.create_job(job_of(store, "a", "job_3", total=20), TTL, max_work=100)
    assert busy.value.held == 90 and "hold 90 images x steps" in str(busy.value)
    assert store.get_job("a", "job_3") is None
    store.create_job(job_of(store, "b", "job_b", total=500), TTL, max_work=100)  # nothing unfinished: admitted

    running = store.claim_job("a", "job_1", "worker", TTL)
    assert running is not None
    store.save_progress(running.model_copy(update={"status": "running", "step": 5}), TTL)
    assert store.usage("a").unfinished_work == 90  # running still counts
    assert store.complete_job(running.model_copy(update={"status": "succeeded", "step": 40}), TTL)
    assert store.usage("a").unfinished_work == 50
    store.create_job(job_of(store, "a", "job_3", total=20), TTL, max_work=100)
    assert store.usage("a").unfinished_work == 70 and store.usage("a").jobs == 3  # a finished record still counts

    store.create_job(job_of(store, "c", "job_short", total=80), ttl_s=1)  # never finished: its record expires
    time.sleep(2.1)
    assert store.usage("c").unfinished_work == 0
    store.create_job(job_of(store, "c", "job_c", total=90), TTL, max_work=100)
    store.create_job(job_of(store, "c", "job_c2", total=10), TTL, max_work=100)  # 90 + 10: at the cap is fine


def test_a_finished_job_can_be_forgotten_and_frees_its_place(store: Store) -> None:
    for i in range(3):
        store.create_job(job_of(store, "a", f"job_{i}", total=4), TTL)
    assert not store.delete_job("a", "job_0")  # unfinished: its runner would write it again
    assert not store.delete_job("b", "job_0")  # not that tenant's
    done = store.claim_job("a", "job_0", "worker", TTL)
    assert done is not None and store.complete_job(done.model_copy(update={"status": "succeeded"}), TTL)
    assert store.delete_job("a", "job_0")
    assert store.get_job("a", "job_0") is None and not store.delete_job("a", "job_0")
    store.create_job(job_of(store, "a", "job_3"), TTL)
    assert store.usage("a").jobs == 3


# stands for a finished b64_json job's images: what makes a record large
RESULT = {"created": 1, "data": [{"seed": 1, "b64_json": "A" * 2000}]}


def succeeded(job: JobRecord, result: dict | None = None) -> JobRecord:
    return job.model_copy(update={"status": "succeeded", "step": job.total, "result": result or RESULT})


def no_planner(*_: object) -> object:
    raise AssertionError("finishing a job plans nothing")


def finish(store: Store, job: JobRecord) -> bool:
    """The job manager's final write (with its handling of a result over quota), on this store."""
    settings = Settings(limits=Limits(job_ttl_s=TTL))
    return asyncio.run(JobManager(store, None, no_planner, settings).finish(job))


def test_job_bytes_are_counted_at_creation_and_completion(open_replica: Callable[..., Store]) -> None:
    store = open_replica(StorageQuota(max_job_bytes=100_000))
    first, second = job_of(store, "a", "job_1", total=4), job_of(store, "a", "job_2", total=4)
    store.create_job(first, TTL)
    assert store.usage("a").job_bytes == record_bytes(first)
    store.create_job(second, TTL)
    assert store.usage("a").job_bytes == record_bytes(first) + record_bytes(second)
    running = store.claim_job("a", "job_1", "worker", TTL)
    assert running is not None
    store.save_progress(running.model_copy(update={"status": "running", "step": 2}), TTL)
    # a heartbeat changes a few fixed-width fields: counted or not (stores/usage.py), the sum barely moves
    assert abs(store.usage("a").job_bytes - record_bytes(first) - record_bytes(second)) < 64
    done = succeeded(running)
    assert store.complete_job(done, TTL)
    assert store.usage("a").job_bytes == record_bytes(done) + record_bytes(second) > 2000
    assert store.usage("b").job_bytes == 0  # per tenant
    assert store.delete_job("a", "job_1")  # forgotten: its bytes go with it
    assert store.usage("a").job_bytes == record_bytes(second)


def test_a_tenant_without_room_for_a_record_gets_no_new_job_and_is_told_why(
    open_replica: Callable[..., Store],
) -> None:
    plain = open_replica(StorageQuota())
    jobs = [job_of(plain, "a", f"job_{i}") for i in range(3)]
    sizes = [record_bytes(job) for job in jobs]
    store = open_replica(StorageQuota(max_job_bytes=sizes[0] + sizes[1] + sizes[2] // 2))
    store.create_job(jobs[0], TTL)
    store.create_job(jobs[1], TTL)
    with pytest.raises(QuotaExceeded) as refused:
        store.create_job(jobs[2], TTL)
    message = str(refused.value)
    assert f"your job records take {sizes[0] + sizes[1]} bytes and the limit is" in message, message
    assert f"this job's record of {sizes[2]} bytes would pass it" in message, message
    assert "kept 60 s" in message and "the oldest expires in" in message, message
    assert "b64_json" in message and "response_format url" in message and "fewer images" in message, message
    assert store.get_job("a", "job_2") is None and store.usage("a").job_bytes == sizes[0] + sizes[1]
    store.create_job(jobs[1], TTL)  # a retried write of a job it holds is not a new one
    store.create_job(job_of(store, "b", "job_b"), TTL)  # another tenant has its own bytes


def test_a_result_over_the_job_bytes_is_refused_and_the_job_ends_failed_without_it(
    open_replica: Callable[..., Store],
) -> None:
    plain = open_replica(StorageQuota())
    jobs = [job_of(plain, "a", f"job_{i}", total=4) for i in range(2)]
    created = sum(record_bytes(job) for job in jobs)
    small = {"created": 1, "data": [{"seed": 1, "b64_json": "A" * 100}]}
    store = open_replica(StorageQuota(max_job_bytes=created + 1000))  # room for 100 bytes of images, not 2000
    for job in jobs:
        store.create_job(job, TTL)
    over = succeeded(jobs[0])
    with pytest.raises(QuotaExceeded) as refused:
        store.complete_job(over, TTL)
    message = str(refused.value)
    assert "the job's images did not fit your job records' limit of" in message, message
    assert f"with them its record would take {record_bytes(over)} bytes" in message, message
    assert f"your other job records take {record_bytes(jobs[1])} bytes" in message, message
    assert "The images were not kept" in message and "response_format url" in message, message
    assert "fewer images per job, or fewer jobs" in message, message
    assert store.get_job("a", "job_0") == jobs[0] and store.usage("a").job_bytes == created  # nothing written

    assert finish(store, over)  # the job manager writes it failed instead: never refused, never lost
    failed = store.get_job("a", "job_0")
    assert failed is not None and failed.status == "failed" and failed.result is None, failed
    assert failed.error is not None and (failed.error["code"], failed.error["type"]) == (
        "quota_exceeded",
        "insufficient_quota",
    )
    assert failed.error["message"] == message
    assert store.usage("a").job_bytes == record_bytes(failed) + record_bytes(jobs[1]) < created + 1000
    assert store.usage("a").unfinished_work == 4  # it is finished

    fits = succeeded(jobs[1], small)  # a result with room is kept
    assert finish(store, fits) and store.get_job("a", "job_1") == fits


def test_a_final_failure_is_written_even_over_the_job_bytes(open_replica: Callable[..., Store]) -> None:
    plain = open_replica(StorageQuota())
    jobs = [job_of(plain, "a", f"job_{i}") for i in range(2)]
    created = sum(record_bytes(job) for job in jobs)
    store = open_replica(StorageQuota(max_job_bytes=created + 10))
    for job in jobs:
        store.create_job(job, TTL)
    error = {"message": "x" * 500, "type": "server_error", "param": None, "code": None}
    assert store.complete_job(jobs[0].model_copy(update={"status": "failed", "error": error}), TTL)
    assert store.complete_job(jobs[1].model_copy(update={"status": "cancelled", "error": error}), TTL)
    held = store.usage("a").job_bytes
    assert held > created + 10  # over: the jobs had to end, and say how
    with pytest.raises(QuotaExceeded, match=f"your job records take {held} bytes"):
        store.create_job(job_of(store, "a", "job_2"), TTL)


def test_concurrent_results_on_two_replicas_never_pass_the_job_bytes(open_replica: Callable[..., Store]) -> None:
    plain = open_replica(StorageQuota())
    jobs = [job_of(plain, "a", f"job_{i}", total=1) for i in range(WRITERS)]
    created = sum(record_bytes(job) for job in jobs)
    growth = record_bytes(succeeded(jobs[0])) - record_bytes(jobs[0])  # ~2000: a few bytes apart between jobs
    limit = created + 2 * growth + growth // 2  # room for two results, not three
    replicas = [open_replica(StorageQuota(max_job_bytes=limit)), open_replica(StorageQuota(max_job_bytes=limit))]
    for job in jobs:
        replicas[0].create_job(job, TTL)
    accepted: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(WRITERS)

    def complete(i: int) -> None:
        start.wait()
        try:
            if replicas[i % 2].complete_job(succeeded(jobs[i]), TTL):
                accepted.append(jobs[i].id)
        except QuotaExceeded:
            refused.append(jobs[i].id)

    threads = [threading.Thread(target=complete, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(accepted), len(refused)) == (2, WRITERS - 2), (accepted, refused)
    stored = [replicas[1].get_job("a", job.id) for job in jobs]
    assert sorted(j.id for j in stored if j is not None and j.result is not None) == sorted(accepted)
    assert replicas[1].usage("a").job_bytes <= limit


def test_job_bytes_expire_with_their_records_and_go_with_the_tenant(open_replica: Callable[..., Store]) -> None:
    plain = open_replica(StorageQuota())
    jobs = [job_of(plain, "acme", f"job_{i}") for i in range(2)]
    store = open_replica(StorageQuota(max_job_bytes=sum(record_bytes(job) for job in jobs)))
    for job in jobs:
        store.create_job(job, ttl_s=1)
    with pytest.raises(QuotaExceeded):
        store.create_job(job_of(store, "acme", "job_2"), TTL)
    time.sleep(2.1)
    assert store.usage("acme").job_bytes == 0  # expired with their records
    store.create_job(job_of(store, "acme", "job_2"), TTL)
    done = succeeded(job_of(store, "acme", "job_2"), {"created": 1, "data": []})
    assert store.complete_job(done, TTL) and store.usage("acme").job_bytes == record_bytes(done)
    old = store.get_tenant("acme")
    assert old is not None and store.delete_tenant("acme")
    assert stored_mentions(store, old.epoch) == []  # no record or byte count left
    store.create_tenant("acme")
    assert store.usage("acme").job_bytes == 0  # the new incarnation starts empty
    fresh = job_of(store, "acme", "job_3")
    store.create_job(fresh, TTL)
    assert store.usage("acme").job_bytes == record_bytes(fresh)


def test_quota_writes_for_a_deleted_tenant_are_refused(store: Store) -> None:
    job = job_of(store, "acme", "job_late")
    assert store.delete_tenant("acme")
    with pytest.raises(TenantGone):
        store.create_job(job, TTL)
    with pytest.raises(TenantGone):
        store.put_files("acme", {"img_late": b"x"}, TTL, epoch=job.epoch)


def test_the_stream_enqueues_nothing_over_the_quota(redis_store: RedisStore) -> None:
    stream = JobStream(redis_store)
    stream.ensure_group()
    for i in range(2):
        stream.enqueue(job_of(redis_store, "a", f"job_{i}", total=50), TTL, max_work=100)
    with pytest.raises(WorkCapExceeded):
        stream.enqueue(job_of(redis_store, "a", "job_busy", total=10), TTL, max_work=100)
    stream.enqueue(job_of(redis_store, "a", "job_2"), TTL, max_work=100)  # no work (total 0): admitted, 3rd record
    with pytest.raises(QuotaExceeded):
        stream.enqueue(job_of(redis_store, "a", "job_3"), TTL, max_work=100)
    assert redis_store.client.xlen(stream.key) == 3  # entries only for the accepted jobs
    assert redis_store.get_job("a", "job_busy") is None and redis_store.get_job("a", "job_3") is None
    taken = stream.read("worker", count=10, block_ms=100)
    assert sorted(d.job_id for d in taken) == ["job_0", "job_1", "job_2"]
    for delivery in taken:
        stream.ack(delivery.entry_id)
    assert redis_store.client.xlen(stream.key) == 0 and stream.pending() == 0  # no entry is kept once done
    stream.enqueue(job_of(redis_store, "b", "job_b"), TTL)
    assert stream.backlog() == 1  # the lag stays known after the deletes


def test_temporary_files_of_a_killed_write_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    """A process SIGKILLed inside atomic_write (just before its rename) leaves `.<name>.<random>.tmp` next to
    the target; the next store to open the directory removes it and keeps everything else."""
    root = tmp_path / "data"
    store = LocalStore(root)
    store.create_tenant("acme")
    job = JobRecord(id="job_kept", tenant="acme", epoch=store.get_tenant("acme").epoch)  # type: ignore[union-attr]
    store.put_job(job, TTL)
    store.put_file("acme", "img_kept", b"png", TTL)
    child = (
        "import os, signal, sys\n"
        "from service.stores import AdapterMeta, LocalStore, Quota\n"
        "store = LocalStore(sys.argv[1])\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies between the write and the rename\n"
        "meta = AdapterMeta(name='style', kind='lora', size=1 << 20, sha256='a' * 64)\n"
        "store.put_adapter('acme', meta, b'x' * (1 << 20), Quota(max_count=5, max_bytes=1 << 30))\n"
    )
    killed = subprocess.run([sys.executable, "-c", child, str(root)], cwd=Path(__file__).parents[3], check=False)
    assert killed.returncode == -9
    leftovers = [p for p in root.rglob("*.tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".style.") and leftovers[0].stat().st_size == 1 << 20

    reopened = LocalStore(root)
    assert list(root.rglob("*.tmp")) == []
    assert reopened.get_job("acme", "job_kept") == job and reopened.get_file("acme", "img_kept") == b"png"
    assert reopened.get_adapter("acme", "style") is None  # the killed upload never happened
