"""How a job ends (service/jobs/outcome.py): one final write, whoever gets there first; a result the tenant's
job bytes cannot hold written as a failure instead; errors recorded as the API would answer them."""

from __future__ import annotations

import pytest

from service.engine import TenantBusy
from service.jobs.outcome import CANCELLED, error_body, finish
from service.stores import LocalStore, QuotaExceeded, StorageQuota
from service.stores.base import JobRecord

pytestmark = pytest.mark.anyio

TTL = 600


def job(store: LocalStore, **fields: object) -> JobRecord:
    tenant = store.get_tenant("alice")
    assert tenant is not None
    return JobRecord(id="job_1", tenant="alice", epoch=tenant.epoch, owner="here", **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "data", StorageQuota(max_job_bytes=2000))
    store.create_tenant("alice")
    return store


async def test_the_first_final_write_wins(store: LocalStore) -> None:
    store.create_job(job(store), TTL)
    assert await finish(store, job(store, status="succeeded", result={"data": []}), TTL, "here")
    late = job(store, status="cancelled", error=CANCELLED)
    assert await finish(store, late, TTL, "here")  # final already: the caller may acknowledge its entry
    stored = store.get_job("alice", "job_1")
    assert stored is not None and stored.status == "succeeded"


async def test_a_result_over_the_job_bytes_is_written_as_a_failure_without_it(store: LocalStore) -> None:
    store.create_job(job(store), TTL)
    big = job(store, status="succeeded", result={"data": [{"b64_json": "x" * 4000}]})
    assert await finish(store, big, TTL, "here")
    stored = store.get_job("alice", "job_1")
    assert stored is not None and (stored.status, stored.result) == ("failed", None)
    assert stored.error is not None and stored.error["code"] == "quota_exceeded"


async def test_a_deleted_tenants_job_is_never_written(store: LocalStore) -> None:
    record = job(store)
    store.create_job(record, TTL)
    store.delete_tenant("alice")
    assert await finish(store, record.model_copy(update={"status": "succeeded"}), TTL, "here")
    assert store.get_job("alice", "job_1") is None


def test_errors_are_recorded_as_the_api_answers_them() -> None:
    quota = error_body(QuotaExceeded("your url images take 60 bytes"))
    assert quota == {
        "message": "your url images take 60 bytes",
        "type": "insufficient_quota",
        "param": None,
        "code": "quota_exceeded",
    }
    assert error_body(TenantBusy("wait", 3.0))["code"] == "tenant_busy"
    bug = error_body(KeyError("oops"))
    assert bug["type"] == "server_error" and bug["message"] == "the job failed: 'oops'"
