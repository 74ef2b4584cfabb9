"""Request checks before anything is queued: the settings' limits, adapter counts and duplicates, in that
order, and each bounded in time however long the request's lists are."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters import ExportLimits
from adapters.spec import BackboneSpec
from models.shapes.tokenizer import write_trained_words
from models.shapes.train_backbone import PIPELINE_DIR
from service.core.settings import Limits, Settings
from service.engine import EngineError
from service.generation.params import MAX_SEED, ImageParams
from service.generation.plan import InvalidRequest, Plan, check_limits, resolve_adapters
from service.generation.prompt import extract_tags
from service.generation.warnings import trained_words
from service.hotload.cache import AdapterCache
from service.runtime.torch_runtime import TorchRuntime
from service.stores import LocalStore
from tests.service.api.adapter_files import lora_file, ti_file, vpt_file
from tests.service.generation.local_model import LocalModel, local_model

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


# -- whole plans, on the tiny backbone: a real LocalStore and AdapterCache, and the adapters a tenant uploaded ----


@pytest.fixture
def model(tiny_runtime: TorchRuntime, tmp_path: Path) -> Iterator[LocalModel]:
    model = local_model(tiny_runtime, settings(max_n=4, max_steps=50, max_prompt_chars=64), LocalStore(tmp_path / "m"))
    model.add_tenant("alice")
    yield model
    model.close()


def planned(model: LocalModel, epoch: str | None = None, /, **body: Any) -> Plan:
    return model.plan(ImageParams(**{"prompt": "a red circle", **body}), "alice", epoch, "req")


def test_one_request_per_image_with_consecutive_seeds(model: LocalModel) -> None:
    plan = planned(model, n=3, seed=10, steps=7, response_format="url")
    assert [r.seed for r in plan.requests] == [10, 11, 12]
    assert [r.request_id for r in plan.requests] == ["req-0", "req-1", "req-2"]
    assert all((r.tenant, r.steps, r.prompt) == ("alice", 7, "a red circle") for r in plan.requests)
    assert (plan.response_format, plan.revised_prompt) == ("url", None)


def test_without_a_seed_one_is_drawn_and_the_images_follow_it(model: LocalModel) -> None:
    seeds = [r.seed for r in planned(model, n=2).requests]
    assert 0 <= seeds[0] < 2**31 and seeds[1] == seeds[0] + 1
    assert len({planned(model).requests[0].seed for _ in range(8)}) > 1  # drawn per request


@pytest.mark.parametrize(
    ("body", "param", "status", "words"),
    [
        ({"model": "dall-e-3"}, "model", 404, "model 'dall-e-3' does not exist here"),
        ({"n": 5}, "n", 400, "n is 5; at most 4 images per request"),
        ({"steps": 51}, "steps", 400, "steps is 51; the limit is 50"),
        ({"prompt": "x" * 65}, "prompt", 400, "prompt has 65 characters; the limit is 64"),
        ({"seed": MAX_SEED, "n": 2}, "seed", 400, f"seed \\+ n - 1 must not exceed {MAX_SEED}"),
        ({"prompt": "a <lora:x:heavy>"}, "prompt", 400, "lora"),
        ({"size": "16 by 16"}, "size", 400, "is not WIDTHxHEIGHT"),
    ],
)
def test_limits_and_malformed_fields_name_the_field(
    model: LocalModel, body: dict[str, Any], param: str, status: int, words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words) as refused:
        planned(model, **body)
    assert (refused.value.param, refused.value.status) == (param, status)


def test_sizes_are_the_native_one_or_multiples_up_to_four_times_it(model: LocalModel) -> None:
    assert (model.info.image_size, model.info.size_multiple) == (16, 4)  # the tiny backbone
    assert all((r.width, r.height) == (None, None) for r in planned(model, size="auto").requests)
    wide = planned(model, size="64x4").requests[0]
    assert (wide.width, wide.height) == (64, 4)
    with pytest.raises(EngineError, match="width 68 is not supported: use a multiple of 4 up to 64"):
        planned(model, size="68x16")
    with pytest.raises(EngineError, match="height 17 is not supported"):
        planned(model, size="16x17")


def test_an_edit_defaults_to_its_images_size_which_must_suit_the_model(model: LocalModel) -> None:
    params = ImageParams(prompt="a red circle")
    image = np.zeros((16, 32, 3), np.uint8)
    [edit] = model.plan(params, "alice", None, "req", init_image=image, strength=0.5).requests
    assert (edit.width, edit.height, edit.strength) == (32, 16, 0.5) and edit.init_image is image
    with pytest.raises(
        InvalidRequest, match="the image is 18x16; this model needs sides that are multiples of 4"
    ) as refused:
        model.plan(params, "alice", None, "req", init_image=np.zeros((16, 18, 3), np.uint8))
    assert refused.value.param == "image"
    with pytest.raises(EngineError, match="init_image is 32x16 but the request generates 16x16"):
        model.plan(params.model_copy(update={"size": "16x16"}), "alice", None, "req", init_image=image)


def test_tags_leave_the_prompt_and_bring_their_adapters_with_their_weights(model: LocalModel) -> None:
    spec = model.info.spec
    model.upload("alice", "style", lora_file(spec))
    model.upload("alice", "frame", vpt_file(spec))
    plan = planned(model, prompt="a red circle <lora:style:0.5>", adapters=[{"name": "frame", "weight": 0.8}])
    assert plan.revised_prompt == "a red circle" and plan.requests[0].prompt == "a red circle"
    style, frame = (model.store.get_adapter("alice", name) for name in ("style", "frame"))
    assert style is not None and frame is not None
    expected = ((model.cache.get("alice", frame), 0.8), (model.cache.get("alice", style), 0.5))
    assert all(r.adapters == expected for r in plan.requests)  # the body's list first, then the tags


def test_an_embeddings_token_in_a_prompt_brings_the_embedding(model: LocalModel) -> None:
    model.upload("alice", "tok", ti_file(model.info.spec, "<tok>"))
    meta = model.store.get_adapter("alice", "tok")
    assert meta is not None
    assert planned(model, prompt="a <tok> circle").requests[0].adapters == ((model.cache.get("alice", meta), 1.0),)
    assert planned(model, negative_prompt="<tok>").requests[0].adapters == ((model.cache.get("alice", meta), 1.0),)
    assert planned(model).requests[0].adapters == ()  # unused: not applied


def test_adapters_come_only_from_the_callers_incarnation(model: LocalModel) -> None:
    model.upload("alice", "style", lora_file(model.info.spec))
    model.add_tenant("bob")
    with pytest.raises(InvalidRequest, match="'style' not found in your namespace"):
        model.plan(ImageParams(prompt="p <lora:style>"), "bob", None, "req")
    old = model.store.get_tenant("alice")
    assert old is not None
    model.store.delete_tenant("alice")
    model.add_tenant("alice")
    model.upload("alice", "style", lora_file(model.info.spec, seed=9))  # the new tenant's own, same name
    with pytest.raises(InvalidRequest, match="'style' not found"):  # a request of the deleted incarnation
        planned(model, old.epoch, prompt="p <lora:style>")
    assert planned(model, prompt="p <lora:style>").requests[0].adapters[0][1] == 1.0


# -- no silent no-ops: an adapter named where it cannot act is refused; what the model honours in part is a warning --


def test_an_embedding_named_as_an_adapter_is_refused_saying_how_embeddings_are_used(model: LocalModel) -> None:
    model.upload("alice", "tok", ti_file(model.info.spec, "<tok>"))
    for body in ({"adapters": [{"name": "tok"}]}, {"prompt": "a red circle <lora:tok>"}):
        with pytest.raises(
            InvalidRequest, match=r"'tok' is a textual-inversion embedding.*writing its token \(<tok>\)"
        ):
            planned(model, **body)


def test_a_tag_of_the_wrong_kind_names_the_adapters_kind(model: LocalModel) -> None:
    model.upload("alice", "style", lora_file(model.info.spec))
    model.upload("alice", "frame", vpt_file(model.info.spec))
    with pytest.raises(InvalidRequest, match="'frame' is a VPT adapter: write <vpt:frame>") as refused:
        planned(model, prompt="a red circle <lora:frame>")
    assert (refused.value.param, refused.value.status) == ("prompt", 400)
    with pytest.raises(InvalidRequest, match="'style' is a LoRA: write <lora:style>"):
        planned(model, prompt="a red circle <vpt:style>")
    assert planned(model, prompt="a red circle <lyco:style> <vpt:frame>").warnings == []  # the right kinds


def test_a_plain_request_has_no_warnings(model: LocalModel) -> None:
    assert planned(model, negative_prompt="blurry").warnings == []
    assert planned(model, size="16x16").warnings == []  # the tiny backbone's native size, spelled out


def test_unknown_tokens_and_other_sizes_are_warned_about(model: LocalModel) -> None:
    model.upload("alice", "tok", ti_file(model.info.spec, "<tok>"))
    plan = planned(model, prompt="a <tok> circle <nope>", negative_prompt="<also-not>", size="32x16")
    assert len(plan.warnings) == 2
    assert plan.warnings[0].startswith("<also-not>, <nope>: not a token of any of your embeddings")
    assert plan.warnings[1].startswith("size 32x16 is not the model's native 16x16")
    assert "<tok>" not in plan.warnings[0]


def test_words_outside_a_closed_vocabulary_are_warned_about(model: LocalModel, tmp_path: Path) -> None:
    """A model whose tokenizer lists the words it learned (the embedded one does) warns about the others;
    without the list (every other model here) nothing is said about words."""
    assert all("words" not in w for w in planned(model, prompt="a unicorn").warnings)
    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(model.info.tokenizer_dir, tokenizer)
    write_trained_words(tokenizer, ["a", "red", "circle"])
    model.info = replace(model.info, tokenizer_dir=tokenizer)
    model.upload("alice", "tok", ti_file(model.info.spec, "<tok>"))
    [warning] = planned(model, prompt="a red Unicorn <tok>, a circle", negative_prompt="blurry").warnings
    assert warning.startswith("words the model was not trained on: blurry, unicorn.")


def test_the_embedded_model_lists_the_words_it_learned() -> None:
    words = trained_words(PIPELINE_DIR / "tokenizer")
    assert words is not None and {"circle", "red", "solid", "background"} <= words
    assert not {"star", "striped", "night"} & words  # held out of the backbone's training: adapters teach them
