"""SDXL parity with diffusers: a peft LoRA on the U-Net and both text encoders written by `save_lora_weights`, and a
`clip_l` / `clip_g` embedding, through our formats and banked path match `load_lora_weights` and
`load_textual_inversion` on an SDXL pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionXLPipeline

from adapters.formats import load_adapter, load_adapter_file
from adapters.install import install_banked
from adapters.packing import pack_banks
from adapters.spec import COMPONENTS, BackboneSpec
from adapters.text_encoder import encode_inputs_embeds
from adapters.textual_inversion import build_inputs_embeds, ti_table, ti_table_2
from adapters.types import LoRAAdapter, TextualInversion
from tests.adapters.builders import safetensors_bytes
from tests.adapters.sdxl.builders import (
    peft_sdxl_models,
    prompt_ids,
    save_sdxl_lora,
    sdxl_kohya_from_diffusers,
    sdxl_unet_inputs,
)
from tests.export.sdxl_builders import TEXT_DIM, TEXT_DIM_2

RANK, ALPHA = 4, 8.0
TOL = 1e-5


def outputs(unet: torch.nn.Module, text_encoder: torch.nn.Module, text_encoder_2: torch.nn.Module, batch: int) -> dict:
    ids = prompt_ids(text_encoder.config.vocab_size, batch)
    with torch.no_grad():
        second = text_encoder_2(ids, output_hidden_states=True)
        return {
            "noise": unet(**sdxl_unet_inputs(batch)).sample,
            "hidden": text_encoder(ids).last_hidden_state,
            "hidden_2": second.last_hidden_state,
            "penultimate_2": second.hidden_states[-2],  # SDXL's context from the second encoder
            "text_embeds": second.text_embeds,  # its pooled, projected embedding
        }


@pytest.fixture
def lora_file(sdxl_models: tuple, tmp_path: Path) -> Path:
    return save_sdxl_lora(peft_sdxl_models(sdxl_models, RANK, ALPHA, seed=10), tmp_path)


def test_lora_matches_load_lora_weights(
    sdxl_pipe: StableDiffusionXLPipeline, sdxl_models: tuple, sdxl_spec: BackboneSpec, lora_file: Path
) -> None:
    base = outputs(sdxl_pipe.unet, sdxl_pipe.text_encoder, sdxl_pipe.text_encoder_2, 2)
    sdxl_pipe.load_lora_weights(str(lora_file))
    want = outputs(sdxl_pipe.unet, sdxl_pipe.text_encoder, sdxl_pipe.text_encoder_2, 2)
    assert all((want[k] - base[k]).abs().max() > 1e-2 for k in want)  # the LoRA changes every model

    adapter = load_adapter_file(lora_file)
    assert isinstance(adapter, LoRAAdapter) and {layer.alpha for layer in adapter.layers.values()} == {ALPHA}
    te2_layers = [name for name in adapter.layers if name.startswith("text_encoder_2.")]
    assert len(te2_layers) == len(sdxl_spec.targets("text_encoder_2"))
    packed = pack_banks([[(adapter, 1.0)]] * 2, sdxl_spec, max_rank=2 * RANK, max_vpt_tokens=2)
    unet, text_encoder, text_encoder_2 = (
        install_banked(m, sdxl_spec, c) for m, c in zip(sdxl_models, COMPONENTS, strict=True)
    )
    with (
        unet.activate(packed.unet, packed.adapter_slot),
        text_encoder.activate(packed.text_encoder, packed.adapter_slot),
        text_encoder_2.activate(packed.text_encoder_2, packed.adapter_slot),
    ):
        got = outputs(*sdxl_models, 2)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=TOL, rtol=0, msg=key)


def test_kohya_rename_loads_to_the_same_canonical_tensors(lora_file: Path) -> None:
    peft_adapter = load_adapter_file(lora_file)
    kohya = sdxl_kohya_from_diffusers(lora_file, ALPHA)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in kohya)
    assert any(k.startswith("lora_te1_") for k in kohya) and not any(k.startswith("lora_te_") for k in kohya)

    adapter = load_adapter(safetensors_bytes(kohya))
    assert isinstance(adapter, LoRAAdapter) and set(adapter.layers) == set(peft_adapter.layers)
    for name, layer in adapter.layers.items():
        assert torch.equal(layer.down, peft_adapter.layers[name].down), name
        assert torch.equal(layer.up, peft_adapter.layers[name].up), name
        assert layer.alpha == peft_adapter.layers[name].alpha == ALPHA


def diffusers_embeds(pipe: StableDiffusionXLPipeline, prompt: str, second: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's token embeddings [77, D] and the encoder's output the way diffusers tokenizes it, after
    `load_textual_inversion` added the tokens (`<t>`, `<t>_1`, ...) to that tokenizer and table."""
    tokenizer, encoder = (pipe.tokenizer_2, pipe.text_encoder_2) if second else (pipe.tokenizer, pipe.text_encoder)
    text = pipe.maybe_convert_prompt(prompt, tokenizer)
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder.get_input_embeddings()(ids)[0], encoder(ids).last_hidden_state


@pytest.mark.parametrize("vectors", [1, 3])
def test_textual_inversion_matches_load_textual_inversion(
    sdxl_pipe: StableDiffusionXLPipeline, sdxl_dir: Path, tmp_path: Path, vectors: int
) -> None:
    g = torch.Generator().manual_seed(5)
    tensors = {
        "clip_l": torch.randn(vectors, TEXT_DIM, generator=g),
        "clip_g": torch.randn(vectors, TEXT_DIM_2, generator=g),
    }
    path = tmp_path / "kitty.safetensors"
    safetensors.torch.save_file(tensors, path)  # as SDXL embeddings are published: no token inside
    prompt = "a red <kitty> on a blue background"
    pipe = sdxl_pipe
    pipe.load_textual_inversion(
        tensors["clip_l"], token="<kitty>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        tensors["clip_g"], token="<kitty>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )

    adapter = load_adapter(path.read_bytes(), token="<kitty>")
    assert isinstance(adapter, TextualInversion) and adapter.tokens_2 is not None
    ours = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)  # untouched tokenizers and tables
    for second, table in ((False, ti_table([adapter])), (True, ti_table_2([adapter]))):
        tokenizer, encoder = (ours.tokenizer_2, ours.text_encoder_2) if second else (ours.tokenizer, ours.text_encoder)
        want_embeds, want = diffusers_embeds(pipe, prompt, second)
        embeds = build_inputs_embeds(prompt, table, tokenizer, encoder.get_input_embeddings())
        assert torch.equal(embeds, want_embeds)  # padding included: "!" for the second tokenizer
        with torch.no_grad():
            got = encode_inputs_embeds(encoder, embeds[None])
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    assert len(ours.tokenizer_2) == len(pipe.tokenizer_2) - vectors  # ours added no token
