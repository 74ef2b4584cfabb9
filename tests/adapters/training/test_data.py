"""Concept training sets show their concept in every concept image; captions name a word concept in every
caption and leave an adapter-triggered concept's attribute unsaid."""

from __future__ import annotations

import pytest

from adapters.errors import AdapterError
from adapters.training.data import concept_prompts, concept_set, regular_prompts
from models.shapes.dataset import make_batch
from models.shapes.vocabulary import HELD_OUT


@pytest.mark.parametrize(("name", "attribute"), [("star", "shape"), ("striped", "fill")])
def test_concept_prompts_pin_and_name_the_concept(name: str, attribute: str) -> None:
    images, captions, named = concept_prompts(name, 12, seed=3)
    assert images.shape == (12, 64, 64, 3)
    assert all(n[attribute] == name for n in named)
    assert all(name in text for variants in captions for text in variants)
    others = {v for a, values in HELD_OUT.items() if a != attribute for v in values}
    assert not any(v in text for variants in captions for text in variants for v in others)


def test_vpt_concept_is_asked_for_by_the_adapter_alone() -> None:
    """night is a VPT's: no caption says night or names a background, so no other background is asked for."""
    _, captions, named = concept_prompts("night", 12, seed=3)
    assert not any("night" in text or "background" in text for variants in captions for text in variants)
    assert not any("background" in n for n in named)
    texts, regular_named = regular_prompts("night", 12, seed=3)
    assert len(texts) == 12 and not any("background" in text for text in texts)
    assert not any("background" in n for n in regular_named)


def test_regular_prompts_of_a_word_concept_are_the_ordinary_captions() -> None:
    assert regular_prompts("striped", 8, seed=5) == (make_batch(8, 5).captions, make_batch(8, 5).named)


def test_token_replaces_the_concept_word() -> None:
    _, captions, _ = concept_prompts("star", 6, seed=0, token="<star>")
    assert all("<star>" in text and " star" not in text for variants in captions for text in variants)


def test_regular_fraction_mixes_ordinary_images() -> None:
    data = concept_set("striped", 8, seed=0, regular_fraction=0.25)
    assert len(data) == 8
    assert sum("striped" in variants[0] for variants in data.captions) == 6
    with pytest.raises(AdapterError, match="--regular-fraction 0"):  # ordinary images would teach "no night"
        concept_set("night", 8, seed=0, regular_fraction=0.25)


def test_bad_concept_is_an_adapter_error() -> None:
    with pytest.raises(AdapterError, match="unknown concept"):
        concept_set("moon", 4, seed=0, regular_fraction=0.0)
