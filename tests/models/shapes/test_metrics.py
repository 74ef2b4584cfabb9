"""The judge's metric functions on inputs whose answers are known in closed form."""

import numpy as np
import pytest

from models.shapes.metrics import attribute_accuracy, frechet_distance, prompt_accuracy


def test_prompt_accuracy_requires_every_named_attribute():
    named = [{"shape": "circle", "color": "red"}, {"shape": "square"}, {"color": "blue"}, {"shape": "star"}]
    predicted = [
        {"shape": "circle", "color": "red", "fill": "solid"},  # all named right
        {"shape": "square", "color": "green"},  # unnamed colour does not matter
        {"shape": "circle", "color": "green"},  # named colour wrong
        {"shape": "diamond", "color": "blue"},  # named shape wrong
    ]
    assert prompt_accuracy(named, predicted) == 0.5


def test_attribute_accuracy_counts_only_prompts_that_name_the_attribute():
    named = [{"shape": "circle", "color": "red"}, {"shape": "square"}, {"color": "blue"}]
    predicted = [{"shape": "circle", "color": "green"}, {"shape": "star"}, {"color": "blue"}]
    assert attribute_accuracy(named, predicted) == {"color": 0.5, "shape": 0.5}


def test_prompt_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 prompts but 1"):
        prompt_accuracy([{}, {}], [{}])
    with pytest.raises(ValueError, match="zero images"):
        prompt_accuracy([], [])


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_shift_is_the_squared_shift():
    x = np.random.default_rng(1).normal(size=(400, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_in_one_dimension_matches_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(1.0, 2.0, size=(1000, 1))
    b = rng.normal(-0.5, 0.5, size=(800, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_grows_with_the_gap_between_distributions():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(300, 4))
    near = rng.normal(0.1, 1.0, size=(300, 4))
    far = rng.normal(1.0, 2.0, size=(300, 4))
    assert frechet_distance(base, near) < frechet_distance(base, far)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
