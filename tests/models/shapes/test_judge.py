"""The committed judge: its interface, and its accuracy on fresh images it has never seen."""

import numpy as np
import pytest
import torch

from models.shapes.dataset import make_batch
from models.shapes.judge import FEATURE_DIM, JUDGE_WEIGHTS, Judge, ShapesJudge, images_to_input
from models.shapes.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES


def test_judge_has_one_head_per_attribute_with_every_value():
    logits = Judge()(torch.rand(2, 3, 64, 64))
    assert {name: t.shape[-1] for name, t in logits.items()} == {n: len(ATTRIBUTES[n]) for n in ATTRIBUTE_NAMES}


def test_images_to_input_scales_uint8_to_unit_range_channels_first():
    images = np.full((3, 64, 64, 3), 255, dtype=np.uint8)
    x = images_to_input(images)
    assert x.shape == (3, 3, 64, 64) and float(x.max()) == 1.0


def test_missing_weights_give_an_actionable_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make train-judge"):
        ShapesJudge.load(tmp_path / "nope.safetensors")


@pytest.fixture(scope="module")
def judge() -> ShapesJudge:
    return ShapesJudge.load(JUDGE_WEIGHTS)


def test_committed_judge_reads_fresh_images_including_held_out_values(judge):
    batch = make_batch(300, seed=987_654, include_held_out=True)
    verdict = judge(batch.images)
    for name in ATTRIBUTE_NAMES:
        pairs = zip(verdict.labels, batch.scenes, strict=True)
        accuracy = np.mean([label[name] == getattr(s, name) for label, s in pairs])
        assert accuracy >= 0.97, f"{name}: {accuracy:.3f}"
    assert verdict.features.shape == (300, FEATURE_DIM)


def test_committed_judge_recognises_each_held_out_value(judge):
    batch = make_batch(60, seed=5, include_held_out=True)
    scenes = [s for s in batch.scenes]
    star = [type(s)(**{**s.as_dict(), "shape": "star", "fill": "solid"}) for s in scenes[:20]]
    striped = [type(s)(**{**s.as_dict(), "fill": "striped", "size": "large"}) for s in scenes[20:40]]
    night = [type(s)(**{**s.as_dict(), "background": "night"}) for s in scenes[40:]]
    pinned = make_batch(60, seed=6, scenes=star + striped + night)
    labels = judge(pinned.images).labels
    assert sum(label["shape"] == "star" for label in labels[:20]) >= 19
    assert sum(label["fill"] == "striped" for label in labels[20:40]) >= 19
    assert sum(label["background"] == "night" for label in labels[40:]) >= 19


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (2, 64, 64), (64, 64, 3)])
def test_images_of_another_size_are_refused_with_the_reason(shape):
    with pytest.raises(ValueError, match="scores 64x64 RGB images"):
        ShapesJudge(Judge().eval())(np.zeros(shape, np.uint8))
