"""Engine results to OpenAI `data` items (service/generation/results.py): PNGs in the answer, or stored as the
tenant incarnation's files (all or none, within its file quota) and linked."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine import GenerationResult
from service.generation.results import Output, check_file_room, render
from service.stores import LocalStore, QuotaExceeded, StorageQuota, TenantGone


def result(seed: int) -> GenerationResult:
    return GenerationResult(np.full((16, 8, 3), seed, np.uint8), seed, {"total_s": 0.123456, "queue_s": 0.5})


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "data", StorageQuota(max_files=3))
    store.create_tenant("alice")
    return store


def output(store: LocalStore, response_format: str, tenant: str = "alice") -> Output:
    incarnation = store.get_tenant(tenant)
    assert incarnation is not None
    return Output(response_format, tenant, incarnation.epoch, "http://diffplex.test/", 600, store)


def test_b64_items_carry_the_pngs_and_store_nothing(store: LocalStore) -> None:
    items = render([result(1), result(2)], None, output(store, "b64_json"))
    assert [item["seed"] for item in items] == [1, 2]
    assert items[0]["timings"] == {"total_s": 0.1235, "queue_s": 0.5}
    assert np.array_equal(decoded(base64.b64decode(items[1]["b64_json"])), result(2).image)
    assert all("revised_prompt" not in item and "url" not in item for item in items)
    assert store.usage("alice").files == 0


def test_url_items_link_files_stored_for_the_tenant(store: LocalStore) -> None:
    [item] = render([result(7)], "a circle", output(store, "url"))
    assert item["revised_prompt"] == "a circle" and "b64_json" not in item
    prefix = "http://diffplex.test/v1/files/img_"  # one slash after the base url, whatever it ends with
    assert item["url"].startswith(prefix) and item["url"].endswith(".png")
    file_id = item["url"].removeprefix("http://diffplex.test/v1/files/").removesuffix(".png")
    png = store.get_file("alice", file_id)
    assert png is not None and np.array_equal(decoded(png), result(7).image)


def test_url_images_are_refused_before_and_when_they_do_not_fit(store: LocalStore) -> None:
    url = output(store, "url")
    render([result(1), result(2)], None, url)
    check_file_room(url, 1)  # 2 + 1: at the cap of 3
    with pytest.raises(QuotaExceeded, match="you have 2 url images stored and the limit is 3"):
        check_file_room(url, 2)
    with pytest.raises(QuotaExceeded):
        render([result(3), result(4)], None, url)  # all or none: neither is stored
    assert store.usage("alice").files == 2
    check_file_room(output(store, "b64_json"), 100)  # images in the answer are not files


def test_a_deleted_incarnations_images_never_reach_a_new_tenant_of_its_name(store: LocalStore) -> None:
    old = output(store, "url")
    store.delete_tenant("alice")
    store.create_tenant("alice")
    with pytest.raises(TenantGone):
        render([result(1)], None, old)
    assert store.usage("alice").files == 0
