"""The adapter cache on a real LocalStore: byte-bounded LRU, one load per version under concurrency,
errored entries failing fast, and invalidation on the store's change notifications."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from adapters import AdapterError, ExportLimits
from adapters.spec import BackboneSpec
from service.core.metrics import Metrics
from service.hotload.cache import AdapterCache, AdapterGone, adapter_nbytes
from service.hotload.upload import inspect_upload
from service.stores import AdapterMeta, LocalStore, Quota
from tests.service.api.adapter_files import lora_file, ti_file, tiny_spec

LIMITS = ExportLimits(max_lora_rank=4, max_vpt_tokens=3)
QUOTA = Quota(max_count=100, max_bytes=1 << 30)


@pytest.fixture(scope="module")
def spec(tiny_model_dir: Path) -> BackboneSpec:
    return tiny_spec(tiny_model_dir)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "data")
    store.create_tenant("a")
    return store


def put(store: LocalStore, spec: BackboneSpec, name: str, data: bytes) -> AdapterMeta:
    meta = inspect_upload(data, name, None, None, spec, LIMITS, 1 << 26)
    store.put_adapter("a", meta, data, QUOTA)
    return meta


def count(metric: object) -> float:
    return metric._value.get()  # type: ignore[attr-defined]


def test_one_load_then_hits(store: LocalStore, spec: BackboneSpec) -> None:
    metrics = Metrics()
    cache = AdapterCache(store, spec, LIMITS, 1 << 30, metrics)
    meta = put(store, spec, "style", lora_file(spec))
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("a", meta))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in results}) == 1  # every thread got the one parsed object
    assert count(metrics.cache_loads.labels("ready")) == 1 and count(metrics.cache_misses) == 1
    assert cache.state("a", "style", meta.sha256) == "ready"
    assert cache.bytes == adapter_nbytes(results[0])


def test_lru_is_bounded_in_bytes(store: LocalStore, spec: BackboneSpec) -> None:
    first = put(store, spec, "one", lora_file(spec, 1))
    second = put(store, spec, "two", lora_file(spec, 2))
    probe = AdapterCache(store, spec, LIMITS, 1 << 30)
    size = adapter_nbytes(probe.get("a", first))
    cache = AdapterCache(store, spec, LIMITS, int(size * 1.5))
    cache.get("a", first)
    cache.get("a", second)
    assert cache.state("a", "one", first.sha256) is None  # evicted, least recently used
    assert cache.state("a", "two", second.sha256) == "ready"
    assert cache.bytes <= cache.max_bytes


def test_a_change_notification_drops_every_cached_version(store: LocalStore, spec: BackboneSpec) -> None:
    cache = AdapterCache(store, spec, LIMITS, 1 << 30)
    old = put(store, spec, "style", lora_file(spec, 1))
    cache.get("a", old)
    new = put(store, spec, "style", lora_file(spec, 2))  # LocalStore notifies in process
    assert cache.state("a", "style", old.sha256) is None
    assert cache.get("a", new) is not None
    store.delete_adapter("a", "style")
    assert cache.state("a", "style", new.sha256) is None and cache.bytes == 0
    with pytest.raises(AdapterGone):
        cache.get("a", new)
    cache.close()


def test_a_stale_version_loads_the_current_one(store: LocalStore, spec: BackboneSpec) -> None:
    cache = AdapterCache(store, spec, LIMITS, 1 << 30)
    old = put(store, spec, "emb", ti_file(spec, "<x>", seed=1))
    new = put(store, spec, "emb", ti_file(spec, "<x>", seed=2))
    adapter = cache.get("a", old)  # the request read the metadata before the replacement
    assert cache.state("a", "emb", new.sha256) == "ready"
    assert adapter is cache.get("a", new)


def test_errored_entries_fail_fast_with_the_same_message(store: LocalStore, spec: BackboneSpec) -> None:
    metrics = Metrics()
    cache = AdapterCache(store, spec, LIMITS, 1 << 30, metrics)
    junk = b"\x00" * 16
    meta = AdapterMeta(name="junk", kind="lora", size=16, sha256=hashlib.sha256(junk).hexdigest())
    store.put_adapter("a", meta, junk, QUOTA)
    with pytest.raises(AdapterError, match="safetensors") as first:
        cache.get("a", meta)
    with pytest.raises(AdapterError) as second:
        cache.get("a", meta)
    assert str(first.value) == str(second.value)
    assert cache.state("a", "junk", meta.sha256) == "errored"
    assert count(metrics.cache_loads.labels("errored")) == 1
