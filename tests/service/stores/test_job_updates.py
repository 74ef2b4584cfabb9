"""The conditional job-write rules as pure functions: a record of a deleted tenant incarnation (its epoch is
no longer the tenant's, or the tenant is gone) is never claimed, written or shown."""

from __future__ import annotations

import pytest

from service.stores import JobRecord, TenantGone, job_updates

OLD, NEW = "0123456789abcdef", "fedcba9876543210"


def job(**kw: object) -> JobRecord:
    return JobRecord(id="job_1", tenant="acme", epoch=OLD, owner="w1", **kw)


@pytest.mark.parametrize("current", [NEW, None], ids=["re-created", "deleted"])
def test_a_deleted_incarnations_job_is_refused_by_every_rule(current: str | None) -> None:
    stored = job()
    with pytest.raises(TenantGone, match="acme"):
        job_updates.claim(stored, "acme", "w2", current)  # its record was still there when a worker read it
    with pytest.raises(TenantGone):
        job_updates.progress(stored, job(status="running", step=1), current)
    with pytest.raises(TenantGone):
        job_updates.completion(None, job(status="succeeded"), current)  # not even re-created from nothing
    assert job_updates.visible(stored, "acme", current) is None


def test_the_current_incarnation_is_served_as_before() -> None:
    stored = job()
    taken, answer = job_updates.claim(stored, "acme", "w2", OLD)
    assert taken is not None and taken.owner == "w2" and answer == taken
    assert job_updates.claim(stored, "other", "w2", OLD) == (None, None)  # another tenant's: missing
    assert job_updates.completion(None, job(status="succeeded"), OLD)[1]
    assert job_updates.visible(stored, "acme", OLD) == stored
    assert job_updates.visible(stored, "other", OLD) is None
