"""Concept training sets name their concept in every caption and show it in every concept image."""

from __future__ import annotations

import pytest

from adapters.errors import AdapterError
from adapters.training.data import concept_prompts, concept_set
from models.shapes.vocabulary import HELD_OUT


@pytest.mark.parametrize(("name", "attribute"), [("star", "shape"), ("striped", "fill"), ("night", "background")])
def test_concept_prompts_pin_and_name_the_concept(name: str, attribute: str) -> None:
    images, captions, named = concept_prompts(name, 12, seed=3)
    assert images.shape == (12, 64, 64, 3)
    assert all(n[attribute] == name for n in named)
    assert all(name in text for variants in captions for text in variants)
    others = {v for a, values in HELD_OUT.items() if a != attribute for v in values}
    assert not any(v in text for variants in captions for text in variants for v in others)


def test_token_replaces_the_concept_word() -> None:
    _, captions, _ = concept_prompts("star", 6, seed=0, token="<star>")
    assert all("<star>" in text and " star" not in text for variants in captions for text in variants)


def test_regular_fraction_mixes_ordinary_images() -> None:
    data = concept_set("night", 8, seed=0, regular_fraction=0.25)
    assert len(data) == 8
    assert sum("night" in variants[0] for variants in data.captions) == 6


def test_bad_concept_is_an_adapter_error() -> None:
    with pytest.raises(AdapterError, match="unknown concept"):
        concept_set("moon", 4, seed=0, regular_fraction=0.0)
