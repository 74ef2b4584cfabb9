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
    with pytest.raises(AdapterError, match="only linear and 1x1-conv"):
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
                    "text_encoder_2.a.lora_A.weight": torch.ones(4, 8),
                    "text_encoder_2.a.lora_B.weight": torch.ones(8, 4),
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
    with pytest.raises(AdapterError, match="unsupported LoRA layout"):  # LyCORIS LoHa keys
        load_adapter(safetensors_bytes(kohya() | {"lora_unet_mid_block_x.hada_w1_a": torch.ones(4, 4)}))
