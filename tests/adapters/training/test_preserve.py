"""Prior preservation: rows of ordinary images are trained towards the frozen backbone's own prediction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.errors import AdapterError
from adapters.spec import build_spec
from adapters.training.data import TrainingSet, concept_set
from adapters.training.loop import Settings, frozen_text, load_frozen_pipeline, text_path, train
from adapters.training.lora import adapters_off, train_lora
from adapters.training.vpt import train_vpt
from models.shapes.diffusion_loss import min_snr_loss

SETTINGS = Settings(steps=3, lr=1e-2, batch=4, seed=0)


def ordinary_only(count: int = 8) -> TrainingSet:
    """A concept set whose rows are all marked ordinary: with preservation the loss is the distance to the backbone."""
    data = concept_set("striped", count, seed=0, regular_fraction=0.5)
    return replace(data, regular=np.ones(len(data), dtype=bool))


def test_the_concept_set_marks_its_ordinary_images() -> None:
    data = concept_set("striped", 8, seed=0, regular_fraction=0.25)
    assert data.regular.tolist() == [False] * 6 + [True] * 2
    assert not any("striped" in c for captions in data.captions[6:] for c in captions)


@pytest.mark.parametrize("preserve", [True, False])
def test_a_lora_trained_only_to_preserve_stays_the_backbone(pipeline_dir: Path, preserve: bool) -> None:
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    stats = train_lora(pipe, ordinary_only(), SETTINGS, rank=2, preserve=preserve)
    ups = [p for name, p in pipe.unet.named_parameters() if "lora_B" in name]
    moved = max(float(p.detach().abs().max()) for p in ups)
    if preserve:  # B starts at 0, so the LoRA starts as the backbone: zero loss, zero gradient, no step
        assert stats["loss_ema"] == 0.0 and moved == 0.0
    else:  # the same rows with their images' targets move it
        assert moved > 0.0


def test_the_baseline_reads_captions_through_the_frozen_text_encoder(pipeline_dir: Path) -> None:
    """With a text-side LoRA the adapter's hidden states move; the preservation target must not."""
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    captions = ["a red striped circle on a white background"]
    with torch.no_grad():
        before = text_path(pipe)(captions)
    train_lora(pipe, concept_set("striped", 8, 0, 0.25), SETTINGS, rank=2, text_encoder=True)
    with torch.no_grad():
        adapted = text_path(pipe)(captions)
        with adapters_off([pipe.unet, pipe.text_encoder]):
            switched_off = text_path(pipe)(captions)
    assert not torch.allclose(adapted, before)
    assert torch.equal(switched_off, before)


def test_a_vpt_trained_only_to_preserve_has_the_distance_to_the_backbone_as_loss(pipeline_dir: Path) -> None:
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    with_target = train_vpt(pipe, ordinary_only(), SETTINGS, spec, tokens=2, preserve=False)[1]["loss_ema"]
    preserved = train_vpt(pipe, ordinary_only(), SETTINGS, spec, tokens=2, preserve=True)[1]["loss_ema"]
    # a few keys barely move a backbone: its distance to itself is far below its distance to the images
    assert 0.0 < preserved < 0.1 * with_target


def test_replaced_rows_use_the_given_targets() -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(prediction_type="v_prediction")
    x0, noise, pred = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([10, 500, 900])
    rows = torch.tensor([True, False, True])
    full = min_snr_loss(scheduler, pred, x0, noise, t, 5.0, (torch.ones(3, dtype=torch.bool), pred))
    assert full == 0.0  # every row's target is the prediction itself
    mixed = min_snr_loss(scheduler, pred, x0, noise, t, 5.0, (rows, pred[rows]))
    only_row_1 = min_snr_loss(scheduler, pred[1:2], x0[1:2], noise[1:2], t[1:2], 5.0) / 3
    assert torch.allclose(mixed, only_row_1)


def test_unconditional_rows_are_trained_towards_the_backbone_on_empty_captions(pipeline_dir: Path) -> None:
    """`uncond_fraction`: some rows lose their caption and join the distilled rows, whatever their image."""
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    text = frozen_text(pipe)
    seen: list[list[str]] = []

    def baseline(x: torch.Tensor, t: torch.Tensor, captions: list[str]) -> torch.Tensor:
        seen.append(captions)
        return pipe.unet(x, t, text(captions)).sample

    param = torch.zeros(1, requires_grad=True)  # a stand-in adapter: an offset on the prediction

    def denoise(x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return pipe.unet(x, t, hidden).sample + param

    concept_only = concept_set("striped", 8, 0, 0.0)  # no ordinary images: only empty captions are distilled
    settings = replace(SETTINGS, steps=6, uncond_fraction=0.5)
    train(pipe, concept_only, [param], text, denoise, settings, baseline)
    captions = [c for call in seen for c in call]
    assert captions and set(captions) == {""}
    assert 6 <= len(captions) <= 42  # about half of 6 x 4 rows

    seen.clear()
    train(pipe, concept_only, [param], text, denoise, replace(settings, uncond_fraction=0.0), baseline)
    assert seen == []


def test_unconditional_rows_need_a_baseline(pipeline_dir: Path) -> None:
    pipe = load_frozen_pipeline(pipeline_dir)
    with pytest.raises(AdapterError, match="--uncond-fraction needs --preserve"):
        train_lora(pipe, ordinary_only(), replace(SETTINGS, uncond_fraction=0.2), rank=2)


def test_caption_dropout_trains_empty_captions_towards_their_images(pipeline_dir: Path) -> None:
    """`caption_dropout`: some rows lose their caption and keep their image's target; nothing is distilled."""
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    text = frozen_text(pipe)
    encoded: list[str] = []

    def spy(captions: list[str]) -> torch.Tensor:
        encoded.extend(captions)
        return text(captions)

    def baseline(x: torch.Tensor, t: torch.Tensor, captions: list[str]) -> torch.Tensor:
        raise AssertionError("caption dropout distils nothing")

    param = torch.zeros(1, requires_grad=True)
    settings = replace(SETTINGS, steps=6, caption_dropout=0.5)
    train(
        pipe,
        concept_set("night", 8, 0, 0.0),
        [param],
        spy,
        lambda x, t, h: pipe.unet(x, t, h).sample + param,
        settings,
        baseline,
    )
    assert 6 <= encoded.count("") <= 18 and len(encoded) == 24  # about half of 6 x 4 rows
    with pytest.raises(AdapterError, match="choose one"):
        replace(settings, uncond_fraction=0.2).check()
