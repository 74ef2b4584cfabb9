"""Per-tenant storage quotas (job records and url files, each by count and bytes) and unfinished work: one rule
for both stores, applied inside their atomic section to what they read there.

A store keeps, per tenant incarnation, an index of its job records (id -> expiry, the `total` of the unfinished
ones, the record's serialized size) and of its files (id -> expiry, bytes). Only live entries count: an entry
whose expiry has passed is the record or file the store has dropped (or will drop on the next read), so it frees
its place at that moment, without a sweeper; each write trims such entries, so an index never grows beyond the
quota.

A record's bytes are counted when it is created (`check_job`: the record must fit) and when its final state is
written (`complete_job`, where a b64_json job's images arrive: `check_result`). The LocalStore leaves them as
they were at heartbeats and claims: those change a few fixed-width fields (status, step, owner, heartbeat; tens
of bytes), and counting them would rewrite its index file on every heartbeat, so its count may lag a running
record by those tens of bytes until the final write recounts it. Redis recounts at every write (one HSET in
the MULTI that writes the record anyway). A job's images are not known when it is created, so it is accepted
while its record fits; a final write whose result would pass `max_job_bytes` is refused, and the job is then
written as failed without its images, which is never refused: it is its created size plus an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from service.stores.base import JobRecord, QuotaExceeded, StorageQuota, TenantUsage, WorkCapExceeded

# id -> (expiry time, unfinished work (images x steps, 0 once finished), record bytes)
JobEntries = Mapping[str, tuple[float, int, int]]
# id -> (expiry time, bytes)
FileEntries = Mapping[str, tuple[float, int]]
Entry = TypeVar("Entry", tuple[float, int], tuple[float, int, int])

KiB, MiB = 1 << 10, 1 << 20
RESULT_ADVICE = (
    "ask for response_format url (the images are stored as files and the record stays small), fewer images per "
    "job, or fewer jobs"
)


def live(entries: Mapping[str, Entry], now: float) -> dict[str, Entry]:
    return {key: entry for key, entry in entries.items() if entry[0] > now}


def record_bytes(job: JobRecord) -> int:
    """What a job record counts against `max_job_bytes`: its JSON, as the stores write it (Redis exactly; the
    LocalStore adds its expiry, a few bytes)."""
    return len(job.model_dump_json().encode())


def summarize(jobs: JobEntries, files: FileEntries, now: float) -> TenantUsage:
    """The usage of the live entries of `jobs` and `files`."""
    jobs, files = live(jobs, now), live(files, now)
    return TenantUsage(
        jobs=len(jobs),
        job_bytes=sum(size for _, _, size in jobs.values()),
        unfinished_work=sum(work for _, work, _ in jobs.values()),
        files=len(files),
        file_bytes=sum(size for _, size in files.values()),
        jobs_free_at=min((entry[0] for entry in jobs.values()), default=None),
        files_free_at=min((expires for expires, _ in files.values()), default=None),
    )


def duration(seconds: float) -> str:
    """Rounded for people: '40 s', '12 min', '3.5 h'."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size_text(size: int) -> str:
    """Bytes for people, exact while small: '900 bytes', '12.5 KiB', '256.0 MiB'."""
    if size < 10 * KiB:
        return f"{size} bytes"
    if size < MiB:
        return f"{size / KiB:.1f} KiB"
    return f"{size / MiB:.1f} MiB"


def _oldest(free_at: float | None, now: float) -> str:
    return "" if free_at is None else f"; the oldest expires in {duration(free_at - now)}"


def check_job(usage: TenantUsage, quota: StorageQuota, ttl_s: int, now: float, size: int = 0) -> None:
    """Room for one more job record of `size` bytes (`usage`: without it). `size` 0 (not known yet, a check
    before the job is planned) asks for room for at least one byte more: a tenant at its bytes is refused."""
    oldest = _oldest(usage.jobs_free_at, now)
    if quota.max_jobs is not None and usage.jobs + 1 > quota.max_jobs:
        raise QuotaExceeded(
            f"you have {usage.jobs} job records stored and the limit is {quota.max_jobs} per tenant (each is kept "
            f"{duration(ttl_s)}){oldest}: create jobs again after that, or fewer jobs"
        )
    if quota.max_job_bytes is not None and usage.job_bytes + max(size, 1) > quota.max_job_bytes:
        more = f"; this job's record of {size_text(size)} would pass it" if size else ""
        raise QuotaExceeded(
            f"your job records take {size_text(usage.job_bytes)} and the limit is {size_text(quota.max_job_bytes)} "
            f"per tenant (each is kept {duration(ttl_s)}){more}{oldest}: create jobs again after that. A finished "
            f"b64_json job keeps its images in its record: {RESULT_ADVICE}"
        )


def check_result(usage: TenantUsage, quota: StorageQuota, size: int, ttl_s: int, now: float) -> None:
    """Room for a job's final record of `size` bytes, with its result (`usage`: the tenant's other records). The
    message is the failed job's error: it says why its images are missing and how to get them next time."""
    if quota.max_job_bytes is not None and usage.job_bytes + size > quota.max_job_bytes:
        raise QuotaExceeded(
            f"the job's images did not fit your job records' limit of {size_text(quota.max_job_bytes)} per tenant: "
            f"with them its record would take {size_text(size)}, and your other job records take "
            f"{size_text(usage.job_bytes)} (each is kept {duration(ttl_s)}{_oldest(usage.jobs_free_at, now)}). "
            f"The images were not kept; {RESULT_ADVICE}"
        )


def check_work(held: int, work: int, max_work: int | None) -> None:
    """The tenant's unfinished jobs (`held`, without this one) plus this one's `work` within `max_work`; a tenant
    with nothing unfinished is always admitted, or a job larger than the cap could never run."""
    if max_work is not None and held > 0 and held + work > max_work:
        raise WorkCapExceeded(
            f"your queued and running jobs hold {held} images x steps; this job's {work} more would pass your "
            f"limit of {max_work}: wait for some to finish",
            held,
        )


def check_files(usage: TenantUsage, quota: StorageQuota, count: int, size: int, now: float) -> None:
    """Room for `count` more files of `size` bytes in all (`usage`: without them). `size` 0 (not known yet, a
    check before the images are made) asks for room for at least one byte more."""
    advice = "ask for response_format b64_json (nothing is stored) or fewer images"
    oldest = _oldest(usage.files_free_at, now)
    if quota.max_files is not None and usage.files + count > quota.max_files:
        raise QuotaExceeded(
            f"you have {usage.files} url images stored and the limit is {quota.max_files} per tenant: this "
            f"request's {count} more would pass it{oldest}; {advice}"
        )
    if quota.max_file_bytes is not None and usage.file_bytes + max(size, 1) > quota.max_file_bytes:
        more = f"; this request's {size} bytes more would pass it" if size else ""
        raise QuotaExceeded(
            f"your url images take {usage.file_bytes} bytes and the limit is {quota.max_file_bytes} per tenant"
            f"{more}{oldest}; {advice}"
        )
