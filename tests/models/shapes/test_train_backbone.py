"""The backbone recipe runs end to end at toy scale and leaves a pipeline diffusers can load.

Real training is not run here (it takes about an hour); this catches a recipe that no longer runs.
"""

import json

import pytest
from diffusers import StableDiffusionPipeline

from models.shapes.train_backbone import cosine_lr, main


def test_cosine_lr_warms_up_then_decays_to_five_percent():
    assert cosine_lr(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 10) == pytest.approx(0.05)


@pytest.mark.slow
def test_recipe_at_toy_scale_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "pipeline"
    main(
        [
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            "--unet-steps",
            "2",
            "--vae-steps",
            "2",
            "--train-images",
            "300",
            "--vae-images",
            "300",
            "--codec-steps",
            "2",
            "--codec-images",
            "300",
        ]
    )
    stats = json.loads((out / "training.json").read_text())
    assert stats["recipe"]["unet_steps"] == 2 and stats["vae_scaling_factor"] > 0
    assert stats["recipe"]["codec_steps"] == 2 and stats["codec_latent_drift"] >= 0
    assert (out / "tokenizer" / "vocab.json").exists() and (out / "tokenizer" / "merges.txt").exists()
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)
