from __future__ import annotations

import dataclasses

import pytest
import torch

from adapters.errors import AdapterError
from adapters.spec import BackboneSpec
from adapters.types import LoRAAdapter, LoRALayer, TextualInversion, VPTAdapter
from adapters.validate import ExportLimits, validate
from tests.adapters.builders import random_lora, random_ti, random_vpt

LIMITS = ExportLimits(max_lora_rank=8, max_vpt_tokens=4)
Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TE_FC1 = "text_encoder.encoder.layers.0.mlp.fc1"


def test_valid_adapters_pass(spec: BackboneSpec) -> None:
    validate(random_lora(spec, [Q, TE_FC1], rank=8, alpha=4.0, seed=0), spec, LIMITS)
    validate(random_ti({"<a>": 1, "<b>": 3}, 32, seed=0), spec, LIMITS)
    validate(random_vpt(spec, "deep", 4, seed=0), spec, LIMITS)
    validate(random_vpt(spec, "shallow", 1, seed=0), spec, LIMITS)


def test_lora_on_uncovered_modules_names_them(spec: BackboneSpec) -> None:
    adapter = LoRAAdapter(
        {
            Q: random_lora(spec, [Q], 2, 2.0, 0).layers[Q],
            "unet.conv_in": LoRALayer(torch.ones(2, 4), torch.ones(32, 2), 2.0),
            "unet.time_embedding.linear_1": LoRALayer(torch.ones(2, 32), torch.ones(128, 2), 2.0),
        }
    )
    with pytest.raises(AdapterError, match="does not cover: unet.conv_in, unet.time_embedding.linear_1. Retrain"):
        validate(adapter, spec, LIMITS)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (LoRALayer(torch.ones(2, 16), torch.ones(32, 2), 2.0), "is 32 -> 32: the LoRA was trained for another"),
        (LoRALayer(torch.ones(9, 32), torch.ones(32, 9), 9.0), "rank 9; this export allows 1 to 8"),
        (LoRALayer(torch.ones(2, 32), torch.ones(32, 2), float("nan")), "alpha nan"),
        (LoRALayer(torch.ones(2, 32), torch.ones(32, 2), 0.0), "alpha 0.0"),
        (LoRALayer(torch.full((2, 32), float("inf")), torch.ones(32, 2), 2.0), "NaN or infinite"),
    ],
)
def test_lora_layer_failures(spec: BackboneSpec, layer: LoRALayer, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        validate(LoRAAdapter({Q: layer}), spec, LIMITS)


def test_rank_refusal_names_the_setting_that_raises_the_cap(spec: BackboneSpec) -> None:
    """A tenant cannot retrain every LoRA to the cap: the message says what the operator can change instead."""
    over = LoRAAdapter({Q: LoRALayer(torch.ones(9, 32), torch.ones(32, 9), 9.0)})
    with pytest.raises(AdapterError) as default:
        validate(over, spec, LIMITS)
    assert "DIFFPLEX_ENGINE__LORA_RANK" in str(default.value) and "diffplex export --lora-rank N" in str(default.value)
    own = dataclasses.replace(LIMITS, rank_setting="DIFFPLEX_ENGINE__LORA_RANK, now 8")  # a backend's own text
    with pytest.raises(AdapterError, match=r"raise the cap \(DIFFPLEX_ENGINE__LORA_RANK, now 8\)$"):
        validate(over, spec, own)


def test_textual_inversion_failures(spec: BackboneSpec) -> None:
    with pytest.raises(AdapterError, match=r"needs \[n, 32\]: the embedding was trained for another model"):
        validate(random_ti({"<a>": 1}, 768, seed=0), spec, LIMITS)
    with pytest.raises(AdapterError, match="17 vectors; the limit is 16"):
        validate(random_ti({"<a>": 17}, 32, seed=0), spec, LIMITS)
    with pytest.raises(AdapterError, match="NaN"):
        validate(TextualInversion({"<a>": torch.full((1, 32), float("nan"))}), spec, LIMITS)
    with pytest.raises(AdapterError, match="1 to 64 tokens"):
        validate(TextualInversion({}), spec, LIMITS)


def test_vpt_failures(spec: BackboneSpec) -> None:
    deep = random_vpt(spec, "deep", 4, seed=0)
    with pytest.raises(AdapterError, match="prompt tokens do not transfer between backbones"):
        validate(dataclasses.replace(deep, backbone_fingerprint="0" * 64), spec, LIMITS)
    with pytest.raises(AdapterError, match="5 tokens; this export allows 1 to 4"):
        validate(random_vpt(spec, "deep", 5, seed=0), spec, LIMITS)
    with pytest.raises(AdapterError, match="a deep VPT needs tokens for 4 block"):
        validate(dataclasses.replace(deep, tokens=deep.tokens[:2]), spec, LIMITS)
    wrong_dim = (*deep.tokens[:3], torch.ones(4, 32))
    with pytest.raises(AdapterError, match=r"block 3 needs \[4, 64\]"):
        validate(dataclasses.replace(deep, tokens=wrong_dim), spec, LIMITS)
    nan = (torch.full((4, 32), float("nan")), *deep.tokens[1:])
    with pytest.raises(AdapterError, match="VPT block 0 holds NaN"):
        validate(VPTAdapter("deep", nan, spec.fingerprint), spec, LIMITS)
    with pytest.raises(AdapterError, match="cannot take VPT"):
        validate(deep, dataclasses.replace(spec, vpt_blocks=()), LIMITS)
