from __future__ import annotations

import numpy as np
import pytest

from models.shapes.dataset import IMAGE_SIZE, Scene, caption, make_batch, parse_prompt, render, sample_scene
from models.shapes.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES, HELD_OUT, trained_values

BASE = dict(shape="circle", color="red", fill="solid", size="large", position="center", background="white")


def test_same_seed_gives_identical_batches() -> None:
    a, b = make_batch(12, seed=7, include_held_out=True), make_batch(12, seed=7, include_held_out=True)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    assert a.scenes == b.scenes
    assert a.named == b.named


def test_different_seeds_give_different_batches() -> None:
    a, b = make_batch(12, seed=7), make_batch(12, seed=8)
    assert not np.array_equal(a.images, b.images)
    assert a.captions != b.captions


def test_images_are_uint8_rgb_of_the_declared_size() -> None:
    batch = make_batch(5, seed=0)
    assert batch.images.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch.images.dtype == np.uint8
    assert len(batch.scenes) == len(batch.captions) == len(batch.named) == 5
    single = render(Scene(**BASE), np.random.default_rng(0))
    assert single.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and single.dtype == np.uint8


def test_empty_batch() -> None:
    batch = make_batch(0, seed=0)
    assert batch.images.shape == (0, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch.captions == [] and batch.scenes == []


def _draws(include_held_out: bool, n: int = 500) -> dict[str, set[str]]:
    rng = np.random.default_rng(123)
    seen: dict[str, set[str]] = {name: set() for name in ATTRIBUTE_NAMES}
    for _ in range(n):
        for name, value in sample_scene(rng, include_held_out).as_dict().items():
            seen[name].add(value)
    return seen


def test_sample_scene_never_draws_held_out_values_by_default() -> None:
    seen = _draws(include_held_out=False)
    for name in ATTRIBUTE_NAMES:
        assert seen[name] == set(trained_values(name)), name  # every trained value, and nothing else


def test_sample_scene_draws_every_held_out_value_when_asked() -> None:
    seen = _draws(include_held_out=True)
    for name, values in HELD_OUT.items():
        assert set(values) <= seen[name], name


@pytest.mark.parametrize("attribute", ATTRIBUTE_NAMES)
def test_scene_rejects_unknown_values(attribute: str) -> None:
    with pytest.raises(ValueError, match=attribute):
        Scene(**{**BASE, attribute: "plaid"})


def test_parse_prompt_recovers_exactly_the_named_attributes() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        scene = sample_scene(rng, include_held_out=True)
        text, named = caption(scene, rng)
        assert parse_prompt(text) == named, text
        assert {"shape", "color"} <= named.keys()  # the two attributes a caption always names
        assert all(named[name] == getattr(scene, name) for name in named)


@pytest.mark.parametrize(
    ("attribute", "held_out", "trained", "min_changed"),
    [("shape", "star", "circle", 0.03), ("fill", "striped", "solid", 0.03), ("background", "night", "black", 0.5)],
)
def test_held_out_values_render_visibly_differently(
    attribute: str, held_out: str, trained: str, min_changed: float
) -> None:
    # The same seed gives the same jitters, so only the attribute differs between the two renders.
    a = render(Scene(**{**BASE, attribute: held_out}), np.random.default_rng(0)).astype(int)
    b = render(Scene(**{**BASE, attribute: trained}), np.random.default_rng(0)).astype(int)
    changed = (np.abs(a - b).max(axis=-1) > 40).mean()
    assert changed > min_changed, f"{held_out} vs {trained}: only {changed:.1%} of pixels differ"


def test_vocabulary_held_out_values_are_known_values() -> None:
    for name, values in HELD_OUT.items():
        assert set(values) < set(ATTRIBUTES[name]), name  # held out, but some trained value is left
