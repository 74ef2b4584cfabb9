"""LoRA in: peft / diffusers keys with and without LoraConfig metadata, kohya-ss keys, and what is refused."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter
from adapters.types import LoRAAdapter
from tests.adapters.builders import safetensors_bytes

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "down_blocks.0.attentions.0.proj_in"
TE_Q = "encoder.layers.0.self_attn.q_proj"


def peft_file(rank: int = 4, metadata: dict | None = None, extra: dict | None = None) -> bytes:
    g = torch.Generator().manual_seed(0)
    tensors = {
        f"unet.{Q}.lora_A.weight": torch.randn(rank, 32, generator=g),
        f"unet.{Q}.lora_B.weight": torch.randn(32, rank, generator=g),
        f"unet.{PROJ_IN}.lora_A.weight": torch.randn(rank, 32, 1, 1, generator=g),
        f"unet.{PROJ_IN}.lora_B.weight": torch.randn(32, rank, 1, 1, generator=g),
        f"text_encoder.{TE_Q}.lora_linear_layer.down.weight": torch.randn(rank, 32, generator=g),
        f"text_encoder.{TE_Q}.lora_linear_layer.up.weight": torch.randn(32, rank, generator=g),
    } | (extra or {})
    meta = {"lora_adapter_metadata": json.dumps(metadata)} if metadata is not None else None
    return safetensors_bytes(tensors, meta)


def lora(data: bytes) -> LoRAAdapter:
    adapter = load_adapter(data)
    assert isinstance(adapter, LoRAAdapter)
    return adapter


def test_canonical_names_shapes_and_default_alpha() -> None:
    adapter = lora(peft_file())
    assert set(adapter.layers) == {f"unet.{Q}", f"unet.{PROJ_IN}", f"text_encoder.{TE_Q}"}
    assert adapter.layers[f"unet.{PROJ_IN}"].down.shape == (4, 32)  # 1x1 conv flattened
    assert {layer.alpha for layer in adapter.layers.values()} == {4.0}  # no metadata: scale 1, as diffusers


def test_metadata_alpha_rank_and_alpha_patterns() -> None:
    meta = {
        "unet.r": 4,
        "unet.lora_alpha": 8,
        "unet.alpha_pattern": {"proj_in": 2},
        "text_encoder.r": 4,
        "text_encoder.lora_alpha": 16,
        "text_encoder.use_rslora": True,
    }
    adapter = lora(peft_file(metadata=meta))
    assert adapter.layers[f"unet.{Q}"].alpha == 8.0
    assert adapter.layers[f"unet.{PROJ_IN}"].alpha == 2.0
    assert adapter.layers[f"text_encoder.{TE_Q}"].alpha == pytest.approx(16 / 2 * 4)  # rslora: alpha / sqrt(r)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"unet.r": 8, "unet.lora_alpha": 8}, "says rank 8 for .* have rank 4"),
        ({"unet.r": 4, "unet.use_dora": True}, "DoRA"),
        ({"unet.r": "four"}, "r must be an integer"),
        ({"unet.r": 4, "unet.alpha_pattern": [1]}, "must be objects"),
    ],
)
def test_bad_metadata(meta: dict, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        load_adapter(peft_file(metadata=meta))


def test_metadata_not_json() -> None:
    data = safetensors_bytes(
        {f"unet.{Q}.lora_A.weight": torch.ones(1, 32), f"unet.{Q}.lora_B.weight": torch.ones(32, 1)},
        {"lora_adapter_metadata": "{nope"},
    )
    with pytest.raises(AdapterError, match="not valid JSON"):
        load_adapter(data)


def test_refused_layouts() -> None:
    with pytest.raises(AdapterError, match="DoRA"):
        load_adapter(peft_file(extra={f"unet.{Q}.lora_magnitude_vector": torch.ones(32)}))
    with pytest.raises(AdapterError, match="unrecognized LoRA keys"):
        load_adapter(peft_file(extra={f"unet.{Q}.lora_B.bias": torch.ones(32)}))
    with pytest.raises(AdapterError, match="LoCon conv layers \\(1: unet.conv_in"):
        load_adapter(
            peft_file(
                extra={
                    "unet.conv_in.lora_A.weight": torch.ones(4, 4, 3, 3),
                    "unet.conv_in.lora_B.weight": torch.ones(32, 4, 3, 3),
                }
            )
        )
    with pytest.raises(AdapterError, match="has only lora_A"):
        load_adapter(peft_file(extra={"unet.conv_in.lora_A.weight": torch.ones(4, 4)}))
    with pytest.raises(AdapterError, match="rank"):
        load_adapter(
            peft_file(extra={"unet.x.lora_A.weight": torch.ones(4, 8), "unet.x.lora_B.weight": torch.ones(8, 3)})
        )
    with pytest.raises(AdapterError, match="other than the U-Net"):
        load_adapter(
            peft_file(
                extra={
                    "transformer.a.lora_A.weight": torch.ones(4, 8),  # SDXL's text_encoder_2 parses now
                    "transformer.a.lora_B.weight": torch.ones(8, 4),
                }
            )
        )


def kohya(alpha: float | None = 2.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(
            4, 32, generator=g
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(
            32, 4, generator=g
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_down.weight": torch.randn(
            4, 32, generator=g
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight": torch.randn(
            32, 4, generator=g
        ),
        "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_down.weight": torch.randn(4, 64, generator=g),
        "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight": torch.randn(32, 4, generator=g),
    }
    if alpha is not None:
        out |= {k.replace(".lora_down.weight", ".alpha"): torch.tensor(alpha) for k in out if "lora_down" in k}
    return out


def test_kohya_names_and_alphas() -> None:
    adapter = lora(safetensors_bytes(kohya()))
    assert set(adapter.layers) == {
        f"unet.{Q}",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "text_encoder.encoder.layers.1.mlp.fc2",  # kohya's text_model. prefix is dropped
    }
    assert {layer.alpha for layer in adapter.layers.values()} == {2.0}
    assert lora(safetensors_bytes(kohya(alpha=None))).layers[f"unet.{Q}"].alpha == 4.0  # missing alpha: rank


def test_kohya_refusals() -> None:
    with pytest.raises(AdapterError, match="alphas without LoRA weights"):
        load_adapter(safetensors_bytes(kohya() | {"lora_unet_mid_block_x.alpha": torch.tensor(1.0)}))
    with pytest.raises(AdapterError, match="DoRA"):
        load_adapter(safetensors_bytes(kohya() | {"lora_unet_mid_block_x.dora_scale": torch.ones(1, 4)}))
    with pytest.raises(AdapterError, match="LyCORIS LoHa layers on 1 module"):
        load_adapter(safetensors_bytes(kohya() | {"lora_unet_mid_block_x.hada_w1_a": torch.ones(4, 4)}))


KQ = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
TE_FC2 = "lora_te_text_model_encoder_layers_1_mlp_fc2"


def without(tensors: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k != key}


BROKEN_KOHYA = {
    "down-without-up": (without(kohya(), f"{KQ}.lora_up.weight"), f"{KQ} has lora_down.weight but no lora_up"),
    "up-without-down": (without(kohya(), f"{KQ}.lora_down.weight"), f"{KQ} has lora_up.weight but no lora_down"),
    "te-down-without-up": (without(kohya(), f"{TE_FC2}.lora_up.weight"), f"{TE_FC2} has lora_down.weight but no"),
    "alpha-vector": (kohya() | {f"{KQ}.alpha": torch.ones(3)}, f"{KQ}.alpha must be a scalar"),
    "rank-mismatch": (
        kohya() | {f"{KQ}.lora_up.weight": torch.ones(32, 3)},
        "lora_down has rank 4 but lora_up has rank 3",
    ),
    "1d-down": (kohya() | {f"{KQ}.lora_down.weight": torch.ones(32)}, f"{KQ}: lora_down is \\(32,\\)"),
    "0d-down-no-alpha": (
        without(kohya(), f"{KQ}.alpha") | {f"{KQ}.lora_down.weight": torch.tensor(1.0)},
        f"{KQ}: lora_down is \\(\\)",
    ),
    "conv-3x3": (
        kohya() | {f"{KQ}.lora_down.weight": torch.ones(4, 32, 3, 3), f"{KQ}.lora_up.weight": torch.ones(32, 4, 1, 1)},
        f"LoCon conv layers \\(1: {KQ} \\(lora_down \\(4, 32, 3, 3\\)\\)\\) are not supported yet",
    ),
    "conv-5d": (kohya() | {f"{KQ}.lora_up.weight": torch.ones(32, 4, 1, 1, 1)}, "lora_up \\(32, 4, 1, 1, 1\\)"),
    "dotted-module": (
        kohya()
        | {"lora_unet_a.b.lora_down.weight": torch.ones(4, 32), "lora_unet_a.b.lora_up.weight": torch.ones(32, 4)},
        "kohya keys are <module>.lora_down.weight.*not lora_unet_a.b.lora_down.weight",
    ),
    "unknown-te-module": (
        kohya() | {"lora_te_zzz.lora_down.weight": torch.ones(4, 32), "lora_te_zzz.lora_up.weight": torch.ones(32, 4)},
        "text_encoder.zzz.lora.down.weight",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_KOHYA))
def test_broken_kohya_files_are_refused_naming_the_module(case: str) -> None:
    """diffusers' converter trusts the file: a `lora_down` without its `lora_up` was a KeyError (a 500)."""
    tensors, message = BROKEN_KOHYA[case]
    with pytest.raises(AdapterError, match=message):
        load_adapter(safetensors_bytes(tensors))


def test_pattern_keys_are_module_paths_matched_like_peft() -> None:
    meta = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"^to_q": 1, "attn1.to_q": 2, "to_q": 3}}
    assert lora(peft_file(metadata=meta)).layers[f"unet.{Q}"].alpha == 2.0  # the first key that is a suffix
    whole = {**meta, "unet.alpha_pattern": {f"^{Q}": 5}}
    assert lora(peft_file(metadata=whole)).layers[f"unet.{Q}"].alpha == 5.0


@pytest.mark.parametrize("key", [".*.*.*.*.*.*.*.*z", "(", "to_q|to_k", ""])
def test_regex_pattern_keys_are_refused_before_any_matching(key: str) -> None:
    """peft would run each key as a regex on every module: eight `.*` take 21 s per module name."""
    meta = {"unet.r": 4, "unet.rank_pattern": {key: 4}}
    with pytest.raises(AdapterError, match="is not a module path"):
        load_adapter(peft_file(metadata=meta))


def test_a_header_length_starting_with_a_pickle_byte_is_still_safetensors() -> None:
    """One header length in 256 begins with 0x80, a pickle's protocol byte: such a file was refused as a .pt."""
    for pad in range(256):
        data = peft_file(metadata={"unet.r": 4, "pad": "x" * pad})
        if data[0] == 0x80:
            assert set(lora(data).layers) == {f"unet.{Q}", f"unet.{PROJ_IN}", f"text_encoder.{TE_Q}"}
            return
    raise AssertionError("no padding gave a header length starting with 0x80")
