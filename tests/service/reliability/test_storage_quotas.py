"""Storage quotas under a flood. Tenant A sends FLOOD_JOBS jobs with the longest prompts allowed, then
FLOOD_URLS url-format generations: past its caps (JOB_CAP job records, FILE_CAP url images) each one is answered
403 `quota_exceeded` naming the limit, and nothing more of A's is stored, while tenant B creates jobs and url
images as usual and A's accepted jobs all succeed. On the embedded directory store and on Redis (role "all": jobs
go through the job stream, so its enqueue is what refuses them; a tenant whose unfinished work in the stream
would pass the fairness cap is answered 429 + Retry-After there, since no engine holds those jobs yet).

Figures: what A holds in the store at the cap (the data directory's bytes; Redis MEMORY USAGE of its keys),
against what the same flood stored before the quotas existed (`flood` and the measures below, run by a throwaway
script against a server of the previous tree: see RELIABILITY.md).
"""

from __future__ import annotations

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
