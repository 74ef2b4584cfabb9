"""The committed VAE carries the held-out values the adapters teach (stripes since the codec stage), so an
adapter can reach them at all."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from adapters.training.data import concept_prompts
from adapters.training.loop import vae_round_trip
from models.shapes.judge import ShapesJudge
from models.shapes.train_backbone import PIPELINE_DIR


@pytest.mark.parametrize(("name", "attribute"), [("night", "background"), ("star", "shape"), ("striped", "fill")])
def test_the_judge_still_sees_the_concept_after_a_vae_round_trip(name: str, attribute: str) -> None:
    torch.set_num_threads(1)
    vae = AutoencoderKL.from_pretrained(PIPELINE_DIR / "vae").eval()
    images, _, _ = concept_prompts(name, 32, seed=7)
    round_trip = vae_round_trip(vae, images)
    assert round_trip.shape == images.shape and round_trip.dtype == np.uint8
    seen = np.mean([label[attribute] == name for label in ShapesJudge.load()(round_trip).labels])
    assert seen >= 0.9, f"{name}: the judge sees it in {seen:.0%} of VAE round trips"
