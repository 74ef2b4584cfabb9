"""The shipped single-file configs are the published models: each component built from them (on the meta device)
has the published parameter count, the real LDM key layout converts onto them with nothing missing or left over,
and the CLIP tokenizer built from OpenAI's merge list tokenizes as CLIP does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode as transformers_bytes_to_unicode

from export.backbone import check_layout
from export.checkpoint_family import check_shipped_config, detect_family
from export.checkpoint_file import CheckpointKeys
from export.clip_vocab import MERGES_FILE, VOCAB_SIZE, bytes_to_unicode, clip_vocab
from export.shipped_configs import CONFIGS_DIR, SHIPPED, materialize_config
from tests.export.ldm_layout import ldm_from_components

# Published parameter counts (diffusers / transformers modules as the repositories ship them).
SD15_UNET, SD2_UNET, VAE = 859_520_964, 865_910_724, 83_653_863
CLIP_L_TEXT = 123_060_480  # CLIP ViT-L/14's text model (12 layers, width 768)
# OpenCLIP ViT-H/14's text tower as diffusers ships it: 23 of its 24 layers (SD-2 reads the penultimate one) and
# no projection. Per layer 4 x (1024^2 + 1024) attention + 2 x 2 x 1024 norms + (1024 x 4096 + 4096) +
# (4096 x 1024 + 1024) MLP = 12,596,224; embeddings 49,408 x 1024 + 77 x 1024; final norm 2 x 1024.
OPEN_CLIP_H_TEXT = 23 * 12_596_224 + 49_408 * 1024 + 77 * 1024 + 2 * 1024
assert OPEN_CLIP_H_TEXT == 340_387_840

PUBLISHED = {
    "sd15": (SD15_UNET, VAE, CLIP_L_TEXT, "epsilon", 64, "<|endoftext|>"),
    "sd21": (SD2_UNET, VAE, OPEN_CLIP_H_TEXT, "v_prediction", 96, "!"),
    "sd21-base": (SD2_UNET, VAE, OPEN_CLIP_H_TEXT, "epsilon", 64, "!"),
}
# Token ids from OpenAI's own tokenizer (open_clip's SimpleTokenizer over the same merge list), BOS and EOS included.
CLIP_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "An astronaut riding a horse on Mars, 4k, trending on artstation!": [
        *(49406, 550, 18376, 6765, 320, 4558, 525, 7496, 267, 275, 330, 267, 6087, 525, 1486, 2631, 256, 49407)
    ],
    "portrait of a woman, oil painting (masterpiece) by Greg Rutkowski": [
        *(49406, 5352, 539, 320, 2308, 267, 2870, 3086, 263, 12066, 264, 638, 7943, 14973, 17649, 49407)
    ],
    "naïve café déjà vu — 1234": [
        *(49406, 1097, 35689, 563, 15304, 25466, 73, 21259, 13230, 2005, 272, 273, 274, 275, 49407)
    ],
}


def meta_components(name: str) -> tuple[UNet2DConditionModel, dict, AutoencoderKL, dict, CLIPTextModel]:
    config = CONFIGS_DIR / name
    with torch.device("meta"):
        unet_config = UNet2DConditionModel.load_config(config / "unet")
        vae_config = AutoencoderKL.load_config(config / "vae")
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    return unet, unet_config, vae, vae_config, text_encoder


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_component_has_the_published_parameter_count(name: str) -> None:
    unet, _, vae, _, text_encoder = meta_components(name)
    assert (count(unet), count(vae), count(text_encoder)) == PUBLISHED[name][:3]


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_published_key_layout_converts_onto_the_shipped_configs(name: str) -> None:
    """Every weight of a checkpoint with the real architecture (meta tensors: shapes, no memory) reaches a
    parameter of the shipped config's modules with its shape, through diffusers' own key conversion; detection
    agrees with diffusers' model-type inference and the shipped-config check passes."""
    unet, unet_config, vae, vae_config, text_encoder = meta_components(name)
    layout = "clip" if name == "sd15" else "open_clip"
    ldm = ldm_from_components(
        unet.state_dict(), unet_config, vae.state_dict(), vae_config, text_encoder.state_dict(), layout
    )
    assert infer_diffusers_model_type(ldm) == ("v1" if name == "sd15" else "v2")
    keys = CheckpointKeys(Path(f"{name}.safetensors"), {k: tuple(v.shape) for k, v in ldm.items()})
    family = detect_family(keys)
    check_shipped_config(keys, family)
    assert family.shipped_config == ("sd15" if name == "sd15" else "sd21")  # no .ckpt step: v-prediction
    if layout == "clip":
        text = convert_ldm_clip_checkpoint(ldm)
    else:
        text = convert_open_clip_checkpoint(text_encoder, ldm)
    converted = {
        "unet": (convert_ldm_unet_checkpoint(ldm, unet_config), unet),
        "vae": (convert_ldm_vae_checkpoint(ldm, vae_config), vae),
        "text_encoder": ({k.removeprefix("text_model."): v for k, v in text.items()}, text_encoder),
    }
    for component, (weights, module) in converted.items():
        expected = module.state_dict()
        assert not set(expected) - set(weights), component  # nothing missing
        extra = set(weights) - set(expected)
        assert extra <= {"embeddings.position_ids"}, (component, extra)  # a buffer transformers now computes
        assert all(tuple(weights[k].shape) == tuple(v.shape) for k, v in expected.items()), component


@pytest.mark.parametrize("name", list(SHIPPED))
def test_a_materialized_config_is_a_pipeline_layout_with_its_scheduler_and_tokenizer(name: str, tmp_path: Path) -> None:
    config = materialize_config(name, tmp_path / name)
    check_layout(config)
    *_, prediction_type, sample_size, pad = PUBLISHED[name]
    assert (
        json.loads((config / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == prediction_type
    )
    assert json.loads((config / "unet" / "config.json").read_text())["sample_size"] == sample_size
    assert json.loads((config / "vae" / "config.json").read_text())["scaling_factor"] == 0.18215
    tokenizer = CLIPTokenizer.from_pretrained(config / "tokenizer")
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer.pad_token == pad and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == CLIP_IDS["a photo of a cat"]
    padded = tokenizer("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 320, 2368, 49407, *[tokenizer.pad_token_id] * 4]
    assert tokenizer.pad_token_id == (49407 if name == "sd15" else 0)  # SD-2 pads with "!", id 0


def test_the_built_tokenizer_gives_clips_ids(tmp_path: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(materialize_config("sd15", tmp_path) / "tokenizer")
    for text, ids in CLIP_IDS.items():
        assert tokenizer(text).input_ids == ids, text


def test_the_vocabulary_is_clips() -> None:
    digest = hashlib.sha256(MERGES_FILE.read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"  # OpenAI's file
    assert list(bytes_to_unicode().items()) == list(transformers_bytes_to_unicode().items())
    vocab = clip_vocab()
    assert len(vocab) == 49408
    assert (vocab["!"], vocab["!</w>"], vocab["a</w>"], vocab["cat</w>"]) == (0, 256, 320, 2368)
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)
