"""The committed backbone loads offline through diffusers' own pipeline and generates deterministically."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from models.shapes.train_backbone import PIPELINE_DIR

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(PIPELINE_DIR, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _generate(pipe: StableDiffusionPipeline, prompt: str, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=4, guidance_scale=5.0, generator=generator, output_type="np").images[0]


def test_pipeline_layout_is_diffusers_and_weights_are_safetensors_within_budget():
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (PIPELINE_DIR / component).is_dir(), component
    weights = list(PIPELINE_DIR.rglob("*.safetensors"))
    assert len(weights) == 3
    assert not list(PIPELINE_DIR.rglob("*.bin")) and not list(PIPELINE_DIR.rglob("*.pt"))
    assert sum(p.stat().st_size for p in weights) <= 40 * 2**20


def test_pipeline_generates_a_64px_image_and_the_same_seed_gives_the_same_image(pipe):
    first = _generate(pipe, "a red circle on a white background, top left", seed=3)
    again = _generate(pipe, "a red circle on a white background, top left", seed=3)
    other = _generate(pipe, "a red circle on a white background, top left", seed=4)
    assert first.shape == (64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


def test_tokenizer_is_a_clip_tokenizer_that_pads_to_77(pipe):
    tokenizer = pipe.tokenizer
    ids = tokenizer("a small green triangle", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == pipe.tokenizer.bos_token_id
    assert pipe.text_encoder.config.max_position_embeddings == 77


def test_model_card_exists_and_names_the_commands():
    card = (Path(PIPELINE_DIR).parent / "README.md").read_text()
    assert "make train-backbone" in card and "make eval" in card
