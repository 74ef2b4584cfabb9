"""Request checks before anything is queued: the settings' limits, adapter counts and duplicates, in that
order, and each bounded in time however long the request's lists are."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import ExportLimits
from adapters.spec import BackboneSpec
from service.adapter_cache import AdapterCache
from service.generation import InvalidRequest, check_limits, resolve_adapters
from service.params import ImageParams
from service.prompt import extract_tags
from service.settings import Limits, Settings
from service.stores import LocalStore

SPEC = BackboneSpec("f", 4, 8, (), (), {})  # nothing here reaches the adapters' tensors


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "data")


@pytest.fixture
def cache(store: LocalStore) -> Iterator[AdapterCache]:
    cache = AdapterCache(store, SPEC, ExportLimits(4, 3), 1 << 20)
    yield cache
    cache.close()


def settings(**limits: int) -> Settings:
    return Settings(limits=Limits(**limits))


@pytest.mark.parametrize("field", ["user", "quality", "style"])
def test_openai_fields_are_bounded_by_the_setting(field: str) -> None:
    check_limits(ImageParams(prompt="p", **{field: "x" * 16}), settings(max_field_chars=16))
    with pytest.raises(InvalidRequest, match=f"{field} has 17 characters; the limit is 16") as info:
        check_limits(ImageParams(prompt="p", **{field: "x" * 17}), settings(max_field_chars=16))
    assert info.value.param == field


def test_adapter_count_is_checked_before_the_adapters() -> None:
    params = ImageParams(prompt="p", adapters=[{"name": f"a{i}"} for i in range(9)])
    with pytest.raises(InvalidRequest, match="names 9 adapters.*the limit is 8"):
        check_limits(params, settings(max_adapters_per_request=8))


def test_tags_count_with_the_list(store: LocalStore, cache: AdapterCache) -> None:
    params = ImageParams(prompt="p <lora:t1> <lora:t2>", adapters=[{"name": f"a{i}"} for i in range(7)])
    prompt, tags = extract_tags(params.prompt)
    with pytest.raises(InvalidRequest, match="names 9 adapters"):
        resolve_adapters(params, prompt, tags, "alice", store, cache, 8)


def test_duplicates_are_named_and_found_in_linear_time(store: LocalStore, cache: AdapterCache) -> None:
    params = ImageParams(prompt="p <lora:b:0.5>", adapters=[{"name": "a"}, {"name": "b"}, {"name": "a"}])
    prompt, tags = extract_tags(params.prompt)
    with pytest.raises(InvalidRequest, match="adapter\\(s\\) a, b named more than once"):
        resolve_adapters(params, prompt, tags, "alice", store, cache, 8)
    # a deployment allowing many adapters per request: the check stays linear (names.count was quadratic)
    many = ImageParams.model_construct(prompt="p", negative_prompt="", adapters=params.adapters * 20_000)
    start = time.perf_counter()
    with pytest.raises(InvalidRequest, match="named more than once"):
        resolve_adapters(many, "p", [], "alice", store, cache, 100_000)
    assert time.perf_counter() - start < 1.0


def test_missing_adapters_are_not_found_after_the_counts(store: LocalStore, cache: AdapterCache) -> None:
    params = ImageParams(prompt="p", adapters=[{"name": "ghost"}])
    with pytest.raises(InvalidRequest, match="'ghost' not found") as info:
        resolve_adapters(params, "p", [], "alice", store, cache, 8)
    assert info.value.status == 404
