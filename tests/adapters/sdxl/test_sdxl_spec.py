"""SDXL's second text encoder in the spec, the fingerprint, the banks and the banked install; SD-1.x unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from adapters.errors import AdapterError
from adapters.fingerprint import backbone_fingerprint, canonical_module_name, fingerprinted_parameters
from adapters.install import install_banked
from adapters.packing import pack_banks
from adapters.spec import BackboneSpec, build_spec
from tests.adapters.builders import random_lora
from tests.export.sdxl_builders import TEXT_DIM, TEXT_DIM_2

TE2_Q = "text_encoder_2.encoder.layers.2.self_attn.q_proj"
# The keys an SD-1.x/2.x spec has always serialized: exports' manifests hold exactly these.
SD1_SPEC_KEYS = {
    "format_version",
    "fingerprint",
    "token_embedding_dim",
    "max_length",
    "lora_targets",
    "vpt_blocks",
    "target_patterns",
}


def test_spec_has_the_second_encoders_targets_and_width(sdxl_spec: BackboneSpec) -> None:
    te2 = sdxl_spec.targets("text_encoder_2")
    assert len(te2) == 3 * 6  # 3 layers x (q, k, v, out, fc1, fc2), found under `text_model.`
    assert all(t.name.startswith("text_encoder_2.encoder.layers.") for t in te2)
    by_name = {t.name: t for t in te2}
    assert (by_name[TE2_Q].d_in, by_name[TE2_Q].d_out) == (TEXT_DIM_2, TEXT_DIM_2)
    assert by_name["text_encoder_2.encoder.layers.0.mlp.fc1"].d_out == 96
    assert len(sdxl_spec.targets("text_encoder")) == 2 * 6
    assert sdxl_spec.has_text_encoder_2
    assert (sdxl_spec.token_embedding_dim, sdxl_spec.token_embedding_dim_2) == (TEXT_DIM, TEXT_DIM_2)
    assert sdxl_spec.target_patterns["text_encoder_2"] == sdxl_spec.target_patterns["text_encoder"]
    for component in ("unet", "text_encoder", "text_encoder_2"):
        for i, target in enumerate(sdxl_spec.targets(component)):
            assert sdxl_spec.target_index[target.name] == (component, i)


def test_sdxl_spec_round_trips(sdxl_spec: BackboneSpec) -> None:
    data = json.loads(json.dumps(sdxl_spec.to_dict()))
    assert data["token_embedding_dim_2"] == TEXT_DIM_2
    again = BackboneSpec.from_dict(data)
    assert again == sdxl_spec and again.targets("text_encoder_2") == sdxl_spec.targets("text_encoder_2")


def test_one_encoder_spec_serializes_as_before(spec: BackboneSpec) -> None:
    data = spec.to_dict()
    assert set(data) == SD1_SPEC_KEYS and set(data["target_patterns"]) == {"unet", "text_encoder"}
    assert data["format_version"] == 1
    again = BackboneSpec.from_dict(data)  # an existing export's manifest: no second encoder
    assert again == spec and not again.has_text_encoder_2 and again.targets("text_encoder_2") == ()


def test_one_encoder_fingerprint_is_unchanged(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, spec: BackboneSpec
) -> None:
    """The hash is as it was; what it covers without a second encoder is too (SD-1.x exports and VPTs name it)."""
    before_sdxl = {canonical_module_name("unet", n): p for n, p in unet.named_parameters()}
    before_sdxl |= {canonical_module_name("text_encoder", n): p for n, p in text_encoder.named_parameters()}
    params = fingerprinted_parameters(unet, text_encoder)
    assert list(params) == list(before_sdxl) and all(params[n] is p for n, p in before_sdxl.items())
    assert (
        backbone_fingerprint(unet, text_encoder) == backbone_fingerprint(unet, text_encoder, None) == spec.fingerprint
    )


def test_fingerprint_covers_the_second_encoder(sdxl_models: tuple, sdxl_spec: BackboneSpec) -> None:
    unet, text_encoder, text_encoder_2 = sdxl_models
    names = set(fingerprinted_parameters(unet, text_encoder, text_encoder_2))
    assert f"{TE2_Q}.weight" in names  # `text_model.` dropped, as for the first encoder
    assert "text_encoder_2.text_projection.weight" in names
    assert sdxl_spec.fingerprint == backbone_fingerprint(unet, text_encoder, text_encoder_2)
    assert sdxl_spec.fingerprint != backbone_fingerprint(unet, text_encoder)
    with torch.no_grad():  # a fine-tune of the second encoder alone: another backbone
        for p in text_encoder_2.parameters():
            p.add_(1e-2)
    assert backbone_fingerprint(unet, text_encoder, text_encoder_2) != sdxl_spec.fingerprint


def test_banks_for_the_second_encoder(sdxl_spec: BackboneSpec, spec: BackboneSpec) -> None:
    te_q = "text_encoder.encoder.layers.0.self_attn.q_proj"
    lora = random_lora(sdxl_spec, [TE2_Q, te_q], rank=4, alpha=4.0, seed=0)
    packed = pack_banks([[(lora, 1.0)], None], sdxl_spec, 8, 2)
    n = len(sdxl_spec.targets("text_encoder_2"))
    assert set(packed.text_encoder_2) == {f"lora_{ab}.{i}" for ab in "ab" for i in range(n)}
    assert packed.banks("text_encoder_2") is packed.text_encoder_2
    i = sdxl_spec.target_index[TE2_Q][1]
    assert packed.text_encoder_2[f"lora_a.{i}"].shape == (2, 4, TEXT_DIM_2)
    assert packed.text_encoder_2[f"lora_b.{i}"][1].abs().sum() > 0
    only = pack_banks([[(lora, 1.0)]], sdxl_spec, 8, 2, components=("text_encoder_2",))
    assert only.unet == {} and only.text_encoder == {} and set(only.text_encoder_2) == set(packed.text_encoder_2)
    assert pack_banks([None], spec, 8, 2).text_encoder_2 == {}  # SD-1.x: no such graph
    with pytest.raises(AdapterError, match="no banks for 'vae'"):
        packed.banks("vae")


def test_install_on_the_second_encoder(sdxl_models: tuple, sdxl_spec: BackboneSpec, spec: BackboneSpec) -> None:
    text_encoder_2 = sdxl_models[2]
    ids = torch.randint(0, text_encoder_2.config.vocab_size, (2, 77), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = text_encoder_2(ids)
    # on v_proj: position 0 (where random ids may pool) attends to itself only, so a query LoRA cannot show there
    lora = random_lora(sdxl_spec, [TE2_Q.replace("q_proj", "v_proj")], rank=4, alpha=4.0, seed=1)
    with pytest.raises(AdapterError, match="no second text encoder"):
        install_banked(text_encoder_2, spec, "text_encoder_2")
    banked = install_banked(text_encoder_2, sdxl_spec, "text_encoder_2")
    packed = pack_banks([None, [(lora, 1.0)]], sdxl_spec, 8, 2, components=("text_encoder_2",))
    with torch.no_grad(), banked.activate(packed.text_encoder_2, packed.adapter_slot):
        out = text_encoder_2(ids)
    assert torch.equal(out.last_hidden_state[0], base.last_hidden_state[0])  # slot 0: the base encoder
    assert (out.last_hidden_state[1] - base.last_hidden_state[1]).abs().max() > 1e-3
    assert (out.text_embeds[1] - base.text_embeds[1]).abs().max() > 1e-3
    banked.remove()
    assert type(text_encoder_2.text_model.encoder.layers[2].self_attn.q_proj) is torch.nn.Linear


def test_build_spec_refuses_encoders_of_different_lengths(sdxl_models: tuple) -> None:
    unet, text_encoder, text_encoder_2 = sdxl_models
    text_encoder_2.config.max_position_embeddings = 64
    with pytest.raises(AdapterError, match="take 77 and 64 positions"):
        build_spec(unet, text_encoder, text_encoder_2=text_encoder_2)
