"""Reference parity: diffusers / peft files through our formats and banked path match diffusers' own loaders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_peft
from transformers import CLIPTextModel, CLIPTokenizer

from adapters.formats import load_adapter, load_adapter_file
from adapters.install import install_banked
from adapters.packing import pack_banks
from adapters.spec import BackboneSpec
from adapters.text_encoder import encode_inputs_embeds
from adapters.textual_inversion import build_inputs_embeds, ti_table
from adapters.types import AdapterSet, LoRAAdapter, TextualInversion
from models.shapes.architecture import build_scheduler
from tests.adapters.builders import (
    peft_lora_models,
    peft_to_kohya,
    safetensors_bytes,
    save_diffusers_lora,
    unet_inputs,
)

RANK = 4
TOL = 1e-5


@pytest.fixture
def pipe(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> StableDiffusionPipeline:
    """A pipeline on copies of the test's models, for diffusers' own loaders to mutate."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=32,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=copy.deepcopy(text_encoder),
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ours(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, spec: BackboneSpec, adapter_set: AdapterSet, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """U-Net and text-encoder outputs through install_banked + pack_banks, every row in the set's slot."""
    packed = pack_banks([adapter_set] * batch, spec, max_rank=2 * RANK, max_vpt_tokens=2)
    assert packed.adapter_slot.tolist() == [1] * batch
    banked_unet, banked_te = install_banked(unet, spec, "unet"), install_banked(text_encoder, spec, "text_encoder")
    with torch.no_grad(), banked_unet.activate(packed.unet, packed.adapter_slot):
        noise = unet(**unet_inputs(batch)).sample
    ids = torch.randint(0, text_encoder.config.vocab_size, (batch, 77), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), banked_te.activate(packed.text_encoder, packed.adapter_slot):
        hidden = text_encoder(ids).last_hidden_state
    return noise, hidden


def reference(pipe: StableDiffusionPipeline, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, pipe.text_encoder.config.vocab_size, (batch, 77), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return pipe.unet(**unet_inputs(batch)).sample, pipe.text_encoder(ids).last_hidden_state


@pytest.fixture
def lora_files(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tmp_path: Path) -> dict[str, Path]:
    """Two random peft LoRAs saved by `save_lora_weights`: one with its LoraConfig metadata (alpha 8), one without."""
    files = {}
    for name, alpha, seed, with_metadata in (("a", 8.0, 10, True), ("b", 3.0, 11, False)):
        lora_unet, lora_te = peft_lora_models(unet, text_encoder, RANK, alpha, seed)
        (tmp_path / name).mkdir()
        files[name] = save_diffusers_lora(lora_unet, lora_te, tmp_path / name, with_metadata)
    return files


def test_lora_matches_load_lora_weights(
    pipe: StableDiffusionPipeline,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    spec: BackboneSpec,
    lora_files: dict[str, Path],
) -> None:
    base_noise, base_hidden = reference(pipe, 2)
    pipe.load_lora_weights(str(lora_files["a"]), adapter_name="a")
    want_noise, want_hidden = reference(pipe, 2)
    assert (want_noise - base_noise).abs().max() > 1e-2  # the LoRA really changes both models
    assert (want_hidden - base_hidden).abs().max() > 1e-2

    adapter = load_adapter_file(lora_files["a"])
    assert isinstance(adapter, LoRAAdapter) and {layer.alpha for layer in adapter.layers.values()} == {8.0}
    noise, hidden = ours(unet, text_encoder, spec, [(adapter, 1.0)], 2)
    torch.testing.assert_close(noise, want_noise, atol=TOL, rtol=0)
    torch.testing.assert_close(hidden, want_hidden, atol=TOL, rtol=0)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")
def test_two_weighted_loras_match_set_adapters(
    pipe: StableDiffusionPipeline,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    spec: BackboneSpec,
    lora_files: dict[str, Path],
) -> None:
    pipe.load_lora_weights(str(lora_files["a"]), adapter_name="a")
    pipe.load_lora_weights(str(lora_files["b"]), adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    want_noise, want_hidden = reference(pipe, 1)

    a, b = load_adapter_file(lora_files["a"]), load_adapter_file(lora_files["b"])
    assert {layer.alpha for layer in b.layers.values()} == {float(RANK)}  # no metadata: diffusers loads scale 1
    noise, hidden = ours(unet, text_encoder, spec, [(a, 0.7), (b, -0.4)], 1)
    torch.testing.assert_close(noise, want_noise, atol=TOL, rtol=0)
    torch.testing.assert_close(hidden, want_hidden, atol=TOL, rtol=0)


def test_kohya_file_loads_to_the_same_canonical_tensors(lora_files: dict[str, Path]) -> None:
    peft_adapter = load_adapter_file(lora_files["a"])
    peft_keys = safetensors.torch.load_file(lora_files["a"])
    te = {k: v for k, v in peft_keys.items() if k.startswith("text_encoder.")}
    peft_keys |= convert_state_dict_to_peft(te)  # the te part is saved in diffusers' lora_linear_layer naming
    peft_keys = {k: v for k, v in peft_keys.items() if ".lora_A." in k or ".lora_B." in k}
    kohya = peft_to_kohya(peft_keys, alpha=8.0)
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in kohya)

    adapter = load_adapter(safetensors_bytes(kohya))
    assert isinstance(adapter, LoRAAdapter)
    assert set(adapter.layers) == set(peft_adapter.layers)
    for name, layer in adapter.layers.items():
        torch.testing.assert_close(layer.down, peft_adapter.layers[name].down, atol=0, rtol=0)
        torch.testing.assert_close(layer.up, peft_adapter.layers[name].up, atol=0, rtol=0)
        assert layer.alpha == peft_adapter.layers[name].alpha == 8.0


@pytest.mark.parametrize("vectors", [1, 3])
def test_textual_inversion_matches_load_textual_inversion(
    pipe: StableDiffusionPipeline, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, tmp_path: Path, vectors: int
) -> None:
    dim = text_encoder.config.hidden_size
    embedding = torch.randn(vectors, dim, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "learned_embeds.safetensors"
    safetensors.torch.save_file({"<kitty>": embedding}, path)  # diffusers' textual_inversion.py layout
    prompt = "a red <kitty> on a blue background"

    pipe.load_textual_inversion(str(path))
    want, _ = pipe.encode_prompt(prompt, "cpu", 1, do_classifier_free_guidance=False)

    adapter = load_adapter_file(path)
    assert isinstance(adapter, TextualInversion)
    vocab_before = len(tokenizer)
    table_before = text_encoder.get_input_embeddings().weight.clone()
    embeds = build_inputs_embeds(prompt, ti_table([adapter]), tokenizer, text_encoder.get_input_embeddings())
    with torch.no_grad():
        got = encode_inputs_embeds(text_encoder, embeds[None])
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    assert len(tokenizer) == vocab_before  # the shared tokenizer and table are untouched
    assert torch.equal(text_encoder.get_input_embeddings().weight, table_before)
