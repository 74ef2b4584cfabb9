"""The evaluation's generation path: the reference banked path without an adapter is diffusers' own pipeline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.errors import AdapterError
from adapters.training.evaluate import ReferencePipeline, evaluate_adapter
from models.shapes.evaluate import generate, load_pipeline
from models.shapes.vocabulary import ATTRIBUTE_NAMES
from tests.adapters.builders import random_lora, random_ti, random_vpt

PROMPTS = ["a red square on a white background", "a small blue circle"]


@pytest.fixture
def reference(pipeline_dir: Path) -> ReferencePipeline:
    torch.set_num_threads(1)
    return ReferencePipeline.load(pipeline_dir)


@pytest.mark.parametrize("guidance", [5.0, 1.0])  # at 1.0 the pipeline runs no uncond rows
def test_no_adapter_matches_the_plain_pipeline(
    pipeline_dir: Path, reference: ReferencePipeline, guidance: float
) -> None:
    ours = reference.generate(None, PROMPTS, [1, 2], steps=2, guidance=guidance, batch=2)
    theirs = generate(load_pipeline(pipeline_dir), PROMPTS, [1, 2], steps=2, guidance=guidance, batch=2)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_adapters_change_images(reference: ReferencePipeline) -> None:
    spec = reference.spec
    base = reference.generate(None, PROMPTS, [1, 2], steps=2, guidance=5.0, batch=2)
    lora = random_lora(spec, [t.name for t in spec.targets("unet")][:4], rank=2, alpha=2.0, seed=0)
    for adapter in (lora, random_vpt(spec, "deep", 2, seed=0)):
        assert not np.array_equal(reference.generate(adapter, PROMPTS, [1, 2], 2, 5.0, 2), base)


def test_report_for_a_textual_inversion(pipeline_dir: Path) -> None:
    torch.set_num_threads(1)
    adapter = random_ti({"<star>": 1}, dim=32, seed=0)
    report = evaluate_adapter(adapter, "star", pipeline_dir, samples=2, steps=2, batch=2)
    assert 0.0 <= report["concept_accuracy"] <= 1.0
    assert all("<star>" in p for p in report["example_prompts"])
    # prompts without the token do not see the embedding: identical images, identical accuracy
    assert report["regular_prompt_accuracy_delta"] == 0.0
    without = report["regular_attribute_accuracy_without_adapter"]
    assert report["regular_attribute_accuracy_with_adapter"] == without
    assert set(without) <= set(ATTRIBUTE_NAMES)


def test_report_for_the_composite_ti_splits_pinned_and_other_attributes(pipeline_dir: Path) -> None:
    """Every pinned attribute at once is the concept figure; the other named ones are reported beside it, and
    prompts without the token come out identical to the byte (a TI's regular target is exactly 0)."""
    torch.set_num_threads(1)
    report = evaluate_adapter(random_ti({"<emblem>": 2}, dim=32, seed=0), "emblem", pipeline_dir, 4, steps=1, batch=4)
    assert report["concept_pins"] == {"shape": "square", "color": "purple", "fill": "outlined"}
    assert report["token"] == "<emblem>"
    assert set(report["concept_pinned_attribute_accuracy"]) == {"shape", "color", "fill"}
    assert set(report["concept_other_attribute_accuracy"]) <= {"size", "position", "background"}
    assert report["concept_accuracy"] <= min(report["concept_pinned_attribute_accuracy"].values())
    assert 0.0 <= report["concept_accuracy_words_without_adapter"] <= 1.0
    assert all(p.startswith("a ") and "<emblem>" in p and "square" not in p for p in report["example_prompts"])
    assert report["regular_images_unchanged"] == 1.0 and report["regular_prompt_accuracy_delta"] == 0.0
    assert report["targets"]["regular_delta"] == 0.0 and report["passed"]["regular_delta"]


def test_report_for_a_vpt_asks_for_night_by_loading_it(pipeline_dir: Path, reference: ReferencePipeline) -> None:
    """A VPT has no word: its concept and regular prompts leave the background unsaid."""
    torch.set_num_threads(1)
    report = evaluate_adapter(random_vpt(reference.spec, "deep", 2, seed=0), "night", pipeline_dir, 2, 1, batch=2)
    assert not any("background" in p or "night" in p for p in report["example_prompts"])
    assert "background" not in report["regular_attribute_accuracy_with_adapter"]
    assert report["regular_images_unchanged"] < 1.0  # a VPT acts on every row it is loaded for


def test_a_vpt_of_another_backbone_is_refused(pipeline_dir: Path, reference: ReferencePipeline) -> None:
    other = replace(random_vpt(reference.spec, "deep", 2, seed=0), backbone_fingerprint="0" * 64)
    with pytest.raises(AdapterError, match="prompt tokens do not transfer"):
        evaluate_adapter(other, "night", pipeline_dir, samples=1, steps=1)


def test_report_gives_the_codec_ceiling(pipeline_dir: Path) -> None:
    torch.set_num_threads(1)
    report = evaluate_adapter(random_ti({"<star>": 1}, dim=32, seed=0), "star", pipeline_dir, samples=2, steps=1)
    assert 0.0 <= report["concept_accuracy_codec_ceiling"] <= 1.0
