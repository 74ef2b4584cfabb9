"""The request schema's hard ceilings: every string and list is bounded while the body is parsed."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from service.generation.params import (
    MAX_ADAPTER_WEIGHT,
    MAX_ADAPTERS,
    MAX_FIELD_CHARS,
    MAX_TEXT_CHARS,
    AdapterRef,
    ImageParams,
)

OVER = {
    "prompt": "x" * (MAX_TEXT_CHARS + 1),
    "negative_prompt": "x" * (MAX_TEXT_CHARS + 1),
    "size": "1" * 17,
    "model": "m" * 101,
    "sampler": "s" * 33,
    "user": "u" * (MAX_FIELD_CHARS + 1),
    "quality": "q" * (MAX_FIELD_CHARS + 1),
    "style": "s" * (MAX_FIELD_CHARS + 1),
    "response_format": "b" * 1000,
}


@pytest.mark.parametrize("field", sorted(OVER))
def test_every_string_has_a_ceiling(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ImageParams.model_validate({"prompt": "a red circle", field: OVER[field]})
    (error,) = info.value.errors()
    assert error["loc"] == (field,)


def test_openai_fields_are_accepted_up_to_their_ceiling() -> None:
    at = "x" * MAX_FIELD_CHARS
    params = ImageParams.model_validate({"prompt": "p", "user": at, "quality": "hd", "style": "vivid"})
    assert params.user == at and params.quality == "hd"


def test_a_huge_adapter_list_is_refused_by_the_schema_quickly() -> None:
    body = {"prompt": "p", "adapters": [{"name": f"a{i}"} for i in range(40_000)]}
    start = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        ImageParams.model_validate(body)
    assert time.perf_counter() - start < 2.0  # 40,000 names once cost 13.8 s (a quadratic duplicate check)
    assert info.value.errors()[0]["loc"] == ("adapters",)
    assert len(ImageParams.model_validate({**body, "adapters": body["adapters"][:MAX_ADAPTERS]}).adapters) == 64


@pytest.mark.parametrize("weight", [MAX_ADAPTER_WEIGHT + 0.01, -MAX_ADAPTER_WEIGHT - 1, 1e308])
def test_adapter_weights_are_bounded(weight: float) -> None:
    with pytest.raises(ValidationError):
        AdapterRef(name="a", weight=weight)
