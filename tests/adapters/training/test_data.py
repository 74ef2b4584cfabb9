"""Concept training sets show their concept in every concept image; captions name a word concept in every
caption (a TI's token standing where the pinned values' words would be) and leave an adapter-triggered
concept's attributes unsaid."""

from __future__ import annotations

import pytest

from adapters.errors import AdapterError
from adapters.training.data import CONCEPTS, Concept, concept_prompts, concept_set, regular_prompts
from models.shapes.dataset import make_batch
from models.shapes.vocabulary import HELD_OUT, trained_values

EMBLEM_WORDS = ("purple", "outlined", "square")


@pytest.mark.parametrize("name", ["star", "striped", "emblem"])
def test_concept_prompts_pin_and_name_the_concept(name: str) -> None:
    images, captions, named = concept_prompts(name, 12, seed=3)
    pins = CONCEPTS[name].values
    assert images.shape == (12, 64, 64, 3)
    assert all(n[a] == v for n in named for a, v in pins.items())
    assert all(v in text for variants in captions for text in variants for v in pins.values())
    others = {v for a, values in HELD_OUT.items() if a not in pins for v in values}
    assert not any(v in text for variants in captions for text in variants for v in others)


def test_the_ti_concept_is_a_composite_of_trained_values() -> None:
    """A TI names what the frozen U-Net draws: three attributes, none of them held out."""
    emblem = CONCEPTS["emblem"]
    assert emblem.kind == "ti" and len(emblem.pins) >= 3
    assert all(value in trained_values(attribute) for attribute, value in emblem.pins)
    assert emblem.token == "<emblem>"


def test_vpt_concept_is_asked_for_by_the_adapter_alone() -> None:
    """night is a VPT's: no caption says night or names a background, so no other background is asked for."""
    _, captions, named = concept_prompts("night", 12, seed=3)
    assert not any("night" in text or "background" in text for variants in captions for text in variants)
    assert not any("background" in n for n in named)
    texts, regular_named = regular_prompts("night", 12, seed=3)
    assert len(texts) == 12 and not any("background" in text for text in texts)
    assert not any("background" in n for n in regular_named)


@pytest.mark.parametrize("name", ["striped", "emblem"])
def test_regular_prompts_of_a_word_concept_are_the_ordinary_captions(name: str) -> None:
    assert regular_prompts(name, 8, seed=5) == (make_batch(8, 5).captions, make_batch(8, 5).named)


def test_token_replaces_the_concept_word() -> None:
    _, captions, _ = concept_prompts("star", 6, seed=0, token="<star>")
    assert all("<star>" in text and " star" not in text for variants in captions for text in variants)


def test_token_stands_where_the_three_words_would_be() -> None:
    """ "a small purple outlined square ..." and "an outlined purple square ..." both become "a [small] <emblem>",
    the other attributes still said; the judge is still asked for all of them."""
    _, with_token, named = concept_prompts("emblem", 24, seed=1, token="<emblem>")
    _, with_words, _ = concept_prompts("emblem", 24, seed=1)
    texts = [text for variants in with_token for text in variants]
    assert all(text.count("<emblem>") == 1 and text.startswith("a ") for text in texts)
    assert not any(word in text for text in texts for word in EMBLEM_WORDS)
    assert any(text.startswith("a <emblem>") for text in texts)  # the article is "a" before the token
    assert any("background" in text for text in texts) and any("small" in text or "large" in text for text in texts)
    for token_variants, word_variants in zip(with_token, with_words, strict=True):  # same scenes, same draws
        for token_text, word_text in zip(token_variants, word_variants, strict=True):
            said = word_text.replace("an ", "a ", 1) if word_text.startswith("an ") else word_text
            for order in ("purple outlined square", "outlined purple square"):
                said = said.replace(order, "<emblem>")
            assert token_text == said
    assert all(n["shape"] == "square" and n["color"] == "purple" and n["fill"] == "outlined" for n in named)


@pytest.mark.parametrize(
    ("pins", "message"),
    [((), "at least one"), ((("shape", "star"), ("shape", "circle")), "at most once"), ((("shape", "moon"),), "moon")],
)
def test_bad_concept_definitions_are_refused(pins: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Concept("bad", "ti", pins, "square")


def test_regular_fraction_mixes_ordinary_images() -> None:
    data = concept_set("striped", 8, seed=0, regular_fraction=0.25)
    assert len(data) == 8
    assert sum("striped" in variants[0] for variants in data.captions) == 6
    with pytest.raises(AdapterError, match="--regular-fraction 0"):  # ordinary images would teach "no night"
        concept_set("night", 8, seed=0, regular_fraction=0.25)


def test_bad_concept_is_an_adapter_error() -> None:
    with pytest.raises(AdapterError, match="unknown concept"):
        concept_set("moon", 4, seed=0, regular_fraction=0.0)
