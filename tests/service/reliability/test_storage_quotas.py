"""Storage quotas under a flood. Tenant A sends FLOOD_JOBS jobs with the longest prompts allowed, then
FLOOD_URLS url-format generations: past its caps (JOB_CAP job records, FILE_CAP url images) each one is answered
403 `quota_exceeded` naming the limit, and nothing more of A's is stored, while tenant B creates jobs and url
images as usual and A's accepted jobs all succeed. On the embedded directory store and on Redis (role "all": jobs
go through the job stream, so its enqueue is what refuses them; a tenant whose unfinished work in the stream
would pass the fairness cap is answered 429 + Retry-After there, since no engine holds those jobs yet).

A third flood, of b64_json jobs of 8 images (`b64_flood`), under a small cap on job-record bytes: every accepted
job ends (succeeded while its images fit, else failed with quota_exceeded and no images), a tenant whose next
record would not fit is refused at creation, and what it holds stays at the cap, not at the flood's size.

Figures: what A holds in the store at the cap (the data directory's bytes; Redis MEMORY USAGE of its keys),
against what the same flood stored before the quotas existed (`flood` and the measures below, run by a throwaway
script against a server of the previous tree: see RELIABILITY.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.service.api.server import Server
from tests.service.api.test_jobs import wait_terminal
from tests.service.reliability.conftest import client_for, data_dir, new_tenant, running_server
from tests.service.reliability.figures import record

REDIS_URL = "redis://127.0.0.1:6379/12"
JOB_CAP, FILE_CAP = 20, 10
FLOOD_JOBS, FLOOD_URLS, URL_IMAGES = 100, 20, 2  # FLOOD_URLS requests of URL_IMAGES images
MAX_TENANT_WORK = 1000  # Redis variant: one job of 8 images x 100 steps (800) fits, two do not
CAPS = {
    "DIFFPLEX_LIMITS__MAX_JOBS_PER_TENANT": str(JOB_CAP),
    "DIFFPLEX_LIMITS__MAX_FILES_PER_TENANT": str(FILE_CAP),
    "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0",  # the flood is not cut short by the rate limit
    "DIFFPLEX_FAIRNESS__MAX_TENANT_WORK": str(MAX_TENANT_WORK),
}
LONG = ("a red circle on a blue background, a green square in the corner, " * 20)[:1000]  # max_prompt_chars
JOB_BODY = {"prompt": LONG, "negative_prompt": LONG, "steps": 2, "size": "16x16"}
URL_BODY = {"prompt": "a red circle", "n": URL_IMAGES, "steps": 2, "size": "16x16", "response_format": "url"}
BIG_JOB = {"prompt": "a red circle", "n": 8, "steps": 100, "size": "16x16"}  # 800 images x steps
StoreBytes = Callable[[str, list[str]], int]  # (tenant, its job ids) -> bytes the store holds of it
JOB_BYTES_CAP = 64 * 1024  # two records of B64_BODY's images do not fit
B64_FLOOD = 30
B64_BODY = {"prompt": "a red circle", "n": 8, "steps": 2, "size": "32x32"}  # ~34 KiB of base64 per record
ERROR_SLACK = 512  # a failed job's error message (~450 bytes): written even over the cap, so the job ends


@dataclass
class Flood:
    """What tenant A's flood got back."""

    jobs: list[httpx.Response] = field(default_factory=list)
    urls: list[httpx.Response] = field(default_factory=list)

    def accepted_jobs(self) -> list[str]:
        return [r.json()["id"] for r in self.jobs if r.status_code == 202]

    def answers(self) -> dict[str, dict[str, int]]:
        def count(responses: list[httpx.Response]) -> dict[str, int]:
            codes = (f"{r.status_code} {r.json()['error']['code'] if r.status_code >= 400 else ''}" for r in responses)
            return dict(Counter(code.strip() for code in codes))

        return {"jobs": count(self.jobs), "url_generations": count(self.urls)}


def flood(client: httpx.Client) -> Flood:
    """Sequential, so exactly the first JOB_CAP jobs and FILE_CAP / 2 url requests fit."""
    done = Flood()
    done.jobs = [client.post("/v1/jobs", json={**JOB_BODY, "seed": i}) for i in range(FLOOD_JOBS)]
    done.urls = [client.post("/v1/images/generations", json={**URL_BODY, "seed": i}) for i in range(FLOOD_URLS)]
    return done


def directory_bytes(root: Path, tenant: str) -> int:
    """Bytes of the tenant's job records, files and usage index in a LocalStore directory."""
    paths = [
        *(root / "jobs" / tenant).rglob("*"),
        *(root / "files" / tenant).rglob("*"),
        root / "usage" / f"{tenant}.json",
    ]
    return sum(p.stat().st_size for p in paths if p.is_file())


def redis_bytes(url: str, prefix: str, tenant: str, job_ids: list[str]) -> int:
    """MEMORY USAGE of the tenant's keys: its job records (their keys do not name it), files and indexes."""
    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.scan_iter(f"{prefix}*", count=1000) if f":{tenant}:".encode() in k]
        keys += [f"{prefix}job:{job_id}".encode() for job_id in job_ids]
        return sum(client.memory_usage(k, samples=0) or 0 for k in keys)
    finally:
        client.close()


def assert_quota_refusals(done: Flood) -> None:
    """The first JOB_CAP jobs and FILE_CAP images were accepted; every later request refused, saying why."""
    assert [r.status_code for r in done.jobs] == [202] * JOB_CAP + [403] * (FLOOD_JOBS - JOB_CAP), done.answers()
    for refused in done.jobs[JOB_CAP:]:
        error = refused.json()["error"]
        assert (error["code"], error["type"]) == ("quota_exceeded", "insufficient_quota"), error
        assert f"you have {JOB_CAP} job records stored and the limit is {JOB_CAP}" in error["message"], error
        assert "the oldest expires in" in error["message"], error
    fit = FILE_CAP // URL_IMAGES
    assert [r.status_code for r in done.urls] == [200] * fit + [403] * (FLOOD_URLS - fit), done.answers()
    for refused in done.urls[fit:]:
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded" and f"the limit is {FILE_CAP}" in error["message"], error
        assert "b64_json" in error["message"], error


def check_flood(server: Server, store_bytes: StoreBytes, name: str, **extra: object) -> None:
    """A floods, B works normally; `store_bytes(tenant, job_ids)`: what the store holds of a tenant."""
    a_name, a_key = new_tenant(server, "flood")
    b_name, b_key = new_tenant(server, "calm")
    with client_for(server, a_key) as a, client_for(server, b_key) as b:
        started = time.monotonic()
        done = flood(a)
        flood_s = time.monotonic() - started
        b_jobs = [b.post("/v1/jobs", json={**JOB_BODY, "seed": i}) for i in range(3)]
        b_urls = [b.post("/v1/images/generations", json={**URL_BODY, "seed": i}) for i in range(2)]
        a_final = Counter(wait_terminal(a, job_id, timeout=300)["status"] for job_id in done.accepted_jobs())
        b_final = Counter(
            wait_terminal(b, r.json()["id"], timeout=300)["status"] for r in b_jobs if r.status_code == 202
        )
        b_files = [
            b.get(d["url"].removeprefix(server.url)) for r in b_urls if r.status_code == 200 for d in r.json()["data"]
        ]
        a_b64 = a.post("/v1/images/generations", json={**URL_BODY, "response_format": "b64_json"})
        held = store_bytes(a_name, done.accepted_jobs())
        record(
            name,
            job_cap=JOB_CAP,
            file_cap=FILE_CAP,
            flood_jobs=FLOOD_JOBS,
            flood_url_requests=FLOOD_URLS,
            images_per_url_request=URL_IMAGES,
            flood_s=round(flood_s, 1),
            a_answers=done.answers(),
            a_jobs_final=dict(a_final),
            a_store_bytes=held,
            b_answers={"jobs": [r.status_code for r in b_jobs], "url_generations": [r.status_code for r in b_urls]},
            b_jobs_final=dict(b_final),
            **extra,
        )
    assert_quota_refusals(done)
    assert a_final == Counter({"succeeded": JOB_CAP}), a_final
    assert a_b64.status_code == 200, a_b64.text  # b64_json stores nothing: A still generates
    assert [r.status_code for r in b_jobs] == [202] * 3 and b_final == Counter({"succeeded": 3}), b_final
    assert [r.status_code for r in b_urls] == [200] * 2 and [f.status_code for f in b_files] == [200] * 4
    assert all(f.headers["content-type"] == "image/png" for f in b_files)


def test_a_flooding_tenant_is_capped_and_the_others_are_not(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, **CAPS) as server:
        root = data_dir(server)

        def held(tenant: str, job_ids: list[str]) -> int:
            jobs = len(list((root / "jobs" / tenant).glob("*.json")))
            files = len(list((root / "files" / tenant).rglob("*.png")))
            assert (jobs, files) == (JOB_CAP, FILE_CAP)  # nothing past the caps was written
            return directory_bytes(root, tenant)

        check_flood(server, held, "storage_quotas_local")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"quota-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


def work_cap(server: Server) -> dict[str, object]:
    """Tenant C sends three jobs of 800 images x steps at once (cap 1000): the first is accepted, the others wait
    for it with 429; once nothing of C's is unfinished, one is accepted again."""
    _, key = new_tenant(server, "busy")
    with client_for(server, key) as c:
        tries = [c.post("/v1/jobs", json={**BIG_JOB, "seed": i}) for i in range(3)]
        finals = [wait_terminal(c, r.json()["id"], timeout=300)["status"] for r in tries if r.status_code == 202]
        again = c.post("/v1/jobs", json={**BIG_JOB, "seed": 9})
        after = wait_terminal(c, again.json()["id"], timeout=300)["status"] if again.status_code == 202 else None
    busy = [r for r in tries if r.status_code == 429]
    assert tries[0].status_code == 202 and busy, [r.text for r in tries]  # the 2nd (and 3rd) wait with the 1st
    for refused in busy:
        error = refused.json()["error"]
        assert error["code"] == "tenant_busy" and refused.headers["retry-after"], refused.text
        assert f"would pass your limit of {MAX_TENANT_WORK}" in error["message"], error
    assert set(finals) == {"succeeded"} and after == "succeeded", (finals, again.text)
    return {
        "answers": [r.status_code for r in tries],
        "retry_after": [r.headers["retry-after"] for r in busy],
        "after": again.status_code,
    }


def test_a_flooding_tenant_is_capped_with_redis_and_its_stream_work_too(
    tiny_model_dir: Path, tmp_path: Path, redis_prefix: str
) -> None:
    env = {**CAPS, "DIFFPLEX_REDIS_URL": REDIS_URL, "DIFFPLEX_REDIS_PREFIX": redis_prefix}
    env |= {"DIFFPLEX_WORKER__BLOCK_MS": "200", "DIFFPLEX_JOBS__RESULT_POLL_S": "0.05"}
    client = redis.Redis.from_url(REDIS_URL)
    with running_server(tiny_model_dir, tmp_path, **env) as server:
        busy = work_cap(server)

        def held(tenant: str, job_ids: list[str]) -> int:
            keys = {k.decode() for k in client.scan_iter(f"{redis_prefix}*", count=1000)}
            jobs = sum(f"{redis_prefix}job:{job_id}" in keys for job_id in job_ids)
            files = sum(k.startswith(f"{redis_prefix}file:{tenant}:") for k in keys)
            assert (jobs, files) == (JOB_CAP, FILE_CAP)
            return redis_bytes(REDIS_URL, redis_prefix, tenant, job_ids)

        check_flood(server, held, "storage_quotas_redis", tenant_busy=busy)
        entries_left = client.xlen(f"{redis_prefix}jobs:stream")
    client.close()
    assert entries_left == 0  # every finished job's stream entry went with its acknowledgement


def b64_flood(server: Server, job_record_bytes: StoreBytes, name: str) -> None:
    """Tenant A sends B64_FLOOD b64_json jobs at once; B sends one. `job_record_bytes(tenant, job_ids)`: the bytes
    of those job records in the store."""
    a_name, a_key = new_tenant(server, "b64")
    _, b_key = new_tenant(server, "calm")
    with client_for(server, a_key) as a, client_for(server, b_key) as b:
        answers = [a.post("/v1/jobs", json={**B64_BODY, "seed": i}) for i in range(B64_FLOOD)]
        b_job = b.post("/v1/jobs", json=B64_BODY)
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        finals = [wait_terminal(a, job_id, timeout=300) for job_id in accepted]
        b_final = wait_terminal(b, b_job.json()["id"], timeout=300) if b_job.status_code == 202 else {}
        held = job_record_bytes(a_name, accepted)
    succeeded = [f for f in finals if f["status"] == "succeeded"]
    failed = [f for f in finals if f["status"] != "succeeded"]
    ends = Counter(f"{f['status']} {(f.get('error') or {}).get('code') or ''}".strip() for f in finals)
    refused = [r for r in answers if r.status_code != 202]
    full_record = max((len(json.dumps(f["result"], separators=(",", ":"))) for f in succeeded), default=0)
    record(
        name,
        job_bytes_cap=JOB_BYTES_CAP,
        flood_jobs=B64_FLOOD,
        images_per_job=B64_BODY["n"],
        a_answers=dict(Counter(r.status_code for r in answers)),
        a_jobs_final=dict(ends),
        a_job_record_bytes=held,
        # what the flood's records would hold without the cap: each one with its images
        uncapped_estimate_bytes=B64_FLOOD * full_record,
        b_job_final=b_final.get("status"),
    )
    assert succeeded and failed, ends  # the first results fit, the others did not
    assert all(f["status"] == "failed" and f["error"]["code"] == "quota_exceeded" for f in failed), ends
    assert all("result" not in f or f["result"] is None for f in failed)  # images dropped, not half kept
    assert f"limit of {JOB_BYTES_CAP // 1024}.0 KiB" in failed[0]["error"]["message"], failed[0]
    assert "response_format url" in failed[0]["error"]["message"], failed[0]
    for answer in refused:  # creations refused once a record would not fit
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "quota_exceeded", answer.text
    assert held <= JOB_BYTES_CAP + ERROR_SLACK * len(failed), held  # never the flood's size
    assert held < B64_FLOOD * full_record / 4, (held, full_record)
    assert b_final.get("status") == "succeeded", b_final  # B has its own bytes


def test_a_b64_flood_is_held_to_the_job_bytes_and_every_job_ends(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {"DIFFPLEX_LIMITS__MAX_JOB_BYTES_PER_TENANT": str(JOB_BYTES_CAP), "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0"}
    with running_server(tiny_model_dir, tmp_path, **env) as server:
        root = data_dir(server)

        def held(tenant: str, job_ids: list[str]) -> int:
            """The job files' own bytes, less the `expires` field each carries (not counted: stores/usage.py)."""
            paths = list((root / "jobs" / tenant).glob("*.json"))
            return sum(p.stat().st_size - len(f',"expires":{json.loads(p.read_bytes())["expires"]!r}') for p in paths)

        b64_flood(server, held, "job_bytes_local")


def test_a_b64_flood_is_held_to_the_job_bytes_with_redis(
    tiny_model_dir: Path, tmp_path: Path, redis_prefix: str
) -> None:
    env = {"DIFFPLEX_LIMITS__MAX_JOB_BYTES_PER_TENANT": str(JOB_BYTES_CAP), "DIFFPLEX_LIMITS__RATE_PER_MINUTE": "0"}
    env |= {"DIFFPLEX_REDIS_URL": REDIS_URL, "DIFFPLEX_REDIS_PREFIX": redis_prefix}
    env |= {"DIFFPLEX_WORKER__BLOCK_MS": "200", "DIFFPLEX_JOBS__RESULT_POLL_S": "0.05"}
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with running_server(tiny_model_dir, tmp_path, **env) as server:

            def held(tenant: str, job_ids: list[str]) -> int:
                return sum(client.strlen(f"{redis_prefix}job:{job_id}") for job_id in job_ids)

            b64_flood(server, held, "job_bytes_redis")
    finally:
        client.close()
