"""SDXL adapter files in (kohya te1 / te2 and SGM U-Net names, peft text_encoder_2 keys, clip_l / clip_g
embeddings) and validation in both directions: SDXL adapters on an SD-1.x spec, SD-1.x adapters on an SDXL spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter, load_adapter_file
from adapters.spec import BackboneSpec
from adapters.textual_inversion import ti_table, ti_table_2
from adapters.types import LoRAAdapter, TextualInversion, tensor_digest
from adapters.validate import ExportLimits, validate
from tests.adapters.builders import random_lora, random_ti, safetensors_bytes
from tests.export.sdxl_builders import TEXT_DIM, TEXT_DIM_2

LIMITS = ExportLimits(max_lora_rank=8, max_vpt_tokens=4)
TE2_FC1 = "text_encoder_2.encoder.layers.0.mlp.fc1"


def kohya_file(modules: list[str], rank: int = 2, dim: int = 8) -> bytes:
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in modules:
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, dim, generator=g)
        tensors[f"{name}.lora_up.weight"] = torch.randn(dim, rank, generator=g)
        tensors[f"{name}.alpha"] = torch.tensor(1.0)
    return safetensors_bytes(tensors)


def lora(data: bytes) -> LoRAAdapter:
    adapter = load_adapter(data)
    assert isinstance(adapter, LoRAAdapter)
    return adapter


def test_kohya_sdxl_names() -> None:
    """kohya-ss' SDXL files: `lora_te1_` / `lora_te2_` for the two encoders, SGM block names for the U-Net."""
    adapter = lora(
        kohya_file(
            [
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k",
                "lora_unet_output_blocks_2_1_proj_out",
                "lora_te1_text_model_encoder_layers_0_mlp_fc2",
                "lora_te2_text_model_encoder_layers_0_mlp_fc1",
            ]
        )
    )
    assert set(adapter.layers) == {
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",  # SDXL's layers per block: 2
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
        "unet.up_blocks.0.attentions.2.proj_out",
        "text_encoder.encoder.layers.0.mlp.fc2",
        TE2_FC1,
    }


def test_kohya_file_mixing_block_namings_is_refused_whole() -> None:
    """diffusers would drop the SGM-named modules of such a file and apply the rest."""
    data = kohya_file(
        ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_unet_down_blocks_0_attentions_0_proj_in"]
    )
    with pytest.raises(AdapterError, match="both the SGM way .* and the diffusers way"):
        load_adapter(data)


def test_peft_second_encoder_keys() -> None:
    g = torch.Generator().manual_seed(0)
    te2 = "text_encoder_2.text_model.encoder.layers.0.self_attn"
    tensors = {
        f"{te2}.{proj}.lora_linear_layer.{part}.weight": torch.randn(*shape, generator=g)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
        for part, shape in (("down", (2, 48)), ("up", (48, 2)))
    }
    adapter = lora(safetensors_bytes(tensors))
    assert set(adapter.layers) == {
        f"text_encoder_2.encoder.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")
    }
    assert {layer.alpha for layer in adapter.layers.values()} == {2.0}  # no metadata: scale 1


def test_second_encoder_lora_on_a_one_encoder_spec(spec: BackboneSpec, sdxl_spec: BackboneSpec) -> None:
    adapter = random_lora(sdxl_spec, [TE2_FC1, "text_encoder_2.encoder.layers.1.mlp.fc2"], 2, 2.0, seed=0)
    validate(adapter, sdxl_spec, LIMITS)
    with pytest.raises(AdapterError, match=r"SDXL's second text encoder \(text_encoder_2: 2 modules\); the served "):
        validate(adapter, spec, LIMITS)


def test_one_encoder_lora_on_an_sdxl_spec(spec: BackboneSpec, sdxl_spec: BackboneSpec) -> None:
    every_module = random_lora(spec, [t.name for t in spec.lora_targets], 2, 2.0, seed=0)
    # the tiny U-Nets share module names; the SD-1.x attn2 reads a 32-wide context, SDXL's both encoders' (80)
    with pytest.raises(AdapterError, match="is 80 -> 32: .*another model family or shape; the served model is SDXL"):
        validate(every_module, sdxl_spec, LIMITS)


def test_sdxl_unet_lora_on_a_one_encoder_spec(spec: BackboneSpec, sdxl_spec: BackboneSpec) -> None:
    """No second-encoder layer, but U-Net modules the SD-1.x U-Net does not have (SDXL's deeper blocks)."""
    unet_only = random_lora(sdxl_spec, [t.name for t in sdxl_spec.targets("unet")], 2, 2.0, seed=0)
    with pytest.raises(AdapterError, match="does not cover: unet.* another model family or shape .*SD-1.x/2.x-shaped"):
        validate(unet_only, spec, LIMITS)


def sdxl_ti(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"clip_l": torch.randn(n, TEXT_DIM, generator=g), "clip_g": torch.randn(n, TEXT_DIM_2, generator=g)}


def test_clip_l_clip_g_file(tmp_path: Path) -> None:
    tensors = sdxl_ti()
    adapter = load_adapter(safetensors_bytes(tensors), token="<glow>")
    assert isinstance(adapter, TextualInversion) and adapter.is_sdxl and adapter.tokens_2 is not None
    assert torch.equal(adapter.tokens["<glow>"], tensors["clip_l"])
    assert torch.equal(adapter.tokens_2["<glow>"], tensors["clip_g"])
    with pytest.raises(AdapterError, match="does not name its token"):  # the service asks for the form field
        load_adapter(safetensors_bytes(tensors))
    (tmp_path / "glow.safetensors").write_bytes(safetensors_bytes(tensors))
    assert list(load_adapter_file(tmp_path / "glow.safetensors").tokens) == ["glow"]  # A1111 / ComfyUI: the name
    one = load_adapter(
        safetensors_bytes({"clip_l": torch.randn(TEXT_DIM), "clip_g": torch.randn(TEXT_DIM_2)}), token="<x>"
    )
    assert isinstance(one, TextualInversion) and one.tokens_2 is not None and one.tokens_2["<x>"].shape == (1, 48)
    uneven = {"clip_l": torch.randn(2, TEXT_DIM), "clip_g": torch.randn(3, TEXT_DIM_2)}
    with pytest.raises(AdapterError, match="2 clip_l vectors but 3 clip_g vectors"):
        load_adapter(safetensors_bytes(uneven), token="<x>")


def test_sdxl_embedding_validation(spec: BackboneSpec, sdxl_spec: BackboneSpec) -> None:
    adapter = TextualInversion({"<t>": sdxl_ti()["clip_l"]}, {"<t>": sdxl_ti()["clip_g"]})
    validate(adapter, sdxl_spec, LIMITS)
    with pytest.raises(AdapterError, match="is for SDXL .*one text encoder of width 32: use an embedding made for it"):
        validate(adapter, spec, LIMITS)
    with pytest.raises(AdapterError, match=r"an SDXL embedding carries clip_l \[n, 32\] and clip_g \[n, 48\]"):
        validate(random_ti({"<t>": 2}, TEXT_DIM, seed=0), sdxl_spec, LIMITS)
    narrow = TextualInversion({"<t>": torch.randn(2, TEXT_DIM)}, {"<t>": torch.randn(2, 40)})
    with pytest.raises(AdapterError, match=r"clip_g \(2, 40\); this backbone needs .*clip_g \[n, 48\]"):
        validate(narrow, sdxl_spec, LIMITS)
    other_tokens = TextualInversion({"<t>": torch.randn(2, TEXT_DIM)}, {"<u>": torch.randn(2, TEXT_DIM_2)})
    with pytest.raises(AdapterError, match="for the same tokens"):
        validate(other_tokens, sdxl_spec, LIMITS)
    nan = TextualInversion({"<t>": torch.randn(2, TEXT_DIM)}, {"<t>": torch.full((2, TEXT_DIM_2), float("nan"))})
    with pytest.raises(AdapterError, match=r"embedding '<t>' \(clip_g\) holds NaN"):
        validate(nan, sdxl_spec, LIMITS)


def test_digests_and_tables() -> None:
    one = random_ti({"<a>": 2}, TEXT_DIM, seed=0)
    assert one.digest == tensor_digest(sorted(one.tokens.items()), "textual_inversion")  # as before SDXL
    tensors = sdxl_ti()
    sdxl = TextualInversion({"<a>": tensors["clip_l"]}, {"<a>": tensors["clip_g"]})
    other_g = TextualInversion({"<a>": tensors["clip_l"]}, {"<a>": sdxl_ti(seed=1)["clip_g"]})
    assert len({one.digest, sdxl.digest, other_g.digest}) == 3
    assert ti_table([sdxl]) == {"<a>": tensors["clip_l"]} and ti_table_2([sdxl]) == {"<a>": tensors["clip_g"]}
    with pytest.raises(AdapterError, match="no vectors for the second text encoder"):
        ti_table_2([one])
    with pytest.raises(AdapterError, match="defined by two of your embeddings"):
        ti_table_2([sdxl, other_g])
