from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from adapters.errors import AdapterError
from adapters.fingerprint import backbone_fingerprint
from adapters.spec import BackboneSpec, build_spec


def test_targets_cover_transformer_blocks_and_text_encoder(spec: BackboneSpec) -> None:
    unet, te = spec.targets("unet"), spec.targets("text_encoder")
    # 4 transformer blocks x (8 attention projections + 2 ff) + 4 Transformer2DModels x (proj_in + proj_out)
    assert len(unet) == 4 * 10 + 4 * 2
    assert len(te) == 2 * 6  # 2 layers x (q, k, v, out, fc1, fc2)
    by_name = {t.name: t for t in spec.lora_targets}
    attn2_k = by_name["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"]
    assert (attn2_k.d_in, attn2_k.d_out, attn2_k.conv1x1) == (32, 32, False)  # cross_attention_dim -> inner dim
    ff_in = by_name["unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj"]
    assert (ff_in.d_in, ff_in.d_out) == (64, 64 * 4 * 2)  # GEGLU projects to twice the inner dim
    assert by_name["unet.down_blocks.0.attentions.0.proj_in"].conv1x1  # SD-1.x: 1x1 convs
    assert by_name["text_encoder.encoder.layers.1.mlp.fc1"].d_out == 64
    assert all(not t.name.startswith("unet.time_embedding") for t in unet)


def test_indices_are_per_component(spec: BackboneSpec) -> None:
    for component in ("unet", "text_encoder"):
        for i, target in enumerate(spec.targets(component)):
            assert spec.target_index[target.name] == (component, i)


def test_vpt_blocks_and_token_dim(spec: BackboneSpec) -> None:
    assert spec.vpt_dims == (32, 32, 32, 64)  # module order: down, up (2 attentions), mid
    assert all(".transformer_blocks." in b.name for b in spec.vpt_blocks)
    assert spec.token_embedding_dim == 32 and spec.max_length == 77


def test_json_round_trip(spec: BackboneSpec) -> None:
    again = BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.targets("unet") == spec.targets("unet")


@pytest.mark.parametrize(
    "mutate",
    [lambda d: d.pop("fingerprint"), lambda d: d.update(format_version=99), lambda d: d.update(lora_targets=[{}])],
)
def test_malformed_spec_dict_is_rejected(spec: BackboneSpec, mutate: Callable[[dict], object]) -> None:
    data = spec.to_dict()
    mutate(data)
    with pytest.raises(AdapterError):
        BackboneSpec.from_dict(data)


def test_fingerprint_is_stable_and_sensitive(unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> None:
    first = backbone_fingerprint(unet, text_encoder)
    assert first == backbone_fingerprint(unet, text_encoder)
    assert first == backbone_fingerprint(unet.half(), text_encoder.half())  # dtype-agnostic for fp32 / fp16
    unet.float(), text_encoder.float()
    with torch.no_grad():  # a fine-tune: every weight moves a little
        for p in unet.parameters():
            p.add_(1e-2)
    assert backbone_fingerprint(unet, text_encoder) != first


def test_configurable_targets(unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> None:
    spec = build_spec(unet, text_encoder, unet_targets=("attn2.to_k", "attn2.to_v"), text_encoder_targets=("q_proj",))
    assert len(spec.targets("unet")) == 2 * 4 and len(spec.targets("text_encoder")) == 2
    with pytest.raises(AdapterError, match="match no unet module: to_nothing"):
        build_spec(unet, text_encoder, unet_targets=("to_nothing",))
    with pytest.raises(AdapterError, match="neither nn.Linear nor a 1x1"):
        build_spec(unet, text_encoder, unet_targets=("conv1",))  # resnet 3x3 convs
