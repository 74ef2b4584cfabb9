"""Banked reference modules installed in a U-Net / text encoder: slot 0 is the base model, rows are independent."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from adapters.banked import BankedLoRA
from adapters.errors import AdapterError
from adapters.fingerprint import backbone_fingerprint
from adapters.install import install_banked
from adapters.lora import delta_weight, lora_scale
from adapters.packing import pack_banks
from adapters.spec import BackboneSpec
from tests.adapters.builders import random_lora, random_vpt, unet_inputs

R, P = 8, 4


def row_sets(spec: BackboneSpec) -> list:
    lora_names = [t.name for t in spec.lora_targets]
    lora = random_lora(spec, lora_names, rank=4, alpha=4.0, seed=0)
    return [
        None,
        [(lora, 0.1)],
        [(random_vpt(spec, "deep", 3, seed=1), 1.0)],
        [(lora, -0.1), (random_vpt(spec, "shallow", 2, seed=2), 1.0)],
        None,
    ]


def test_install_shares_weights_and_changes_nothing_until_activated(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, spec: BackboneSpec
) -> None:
    keys, fingerprint = list(unet.state_dict()), backbone_fingerprint(unet, text_encoder)
    to_q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    with torch.no_grad():
        base = unet(**unet_inputs(2)).sample
        banked = install_banked(unet, spec, "unet")
        assert list(unet.state_dict()) == keys and backbone_fingerprint(unet, text_encoder) == fingerprint
        wrapped = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
        assert isinstance(wrapped, BankedLoRA) and wrapped.weight is to_q.weight  # shared, not copied
        assert torch.equal(unet(**unet_inputs(2)).sample, base)
    banked.remove()
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q is to_q
    assert not any(isinstance(m, BankedLoRA) for m in unet.modules())


def test_unet_slot_zero_is_base(unet: UNet2DConditionModel, spec: BackboneSpec) -> None:
    sets = row_sets(spec)
    inputs = unet_inputs(len(sets))
    with torch.no_grad():
        base = unet(**inputs).sample
        base3 = unet(**{k: v[:3] for k, v in inputs.items()}).sample  # same batch size: GEMM blocking matches
        banked = install_banked(unet, spec, "unet")
        lora_only = pack_banks([None, sets[1], None], spec, R, P)
        with banked.activate(lora_only.unet, lora_only.adapter_slot):
            out = unet(**{k: v[:3] for k, v in inputs.items()}).sample
        packed = pack_banks(sets, spec, R, P)
        with banked.activate(packed.unet, packed.adapter_slot):
            mixed = unet(**inputs).sample
    assert torch.equal(out[0], base3[0]) and torch.equal(out[2], base3[2])  # bitwise: B[0] is zero
    torch.testing.assert_close(mixed[[0, 4]], base[[0, 4]], atol=1e-6, rtol=0)  # next to VPT rows: masked keys
    assert all((mixed[n] - base[n]).abs().max() > 1e-3 for n in (1, 2, 3))  # the adapters do something


def test_unet_rows_are_independent(unet: UNet2DConditionModel, spec: BackboneSpec) -> None:
    """In float64, so the backbone's own batch-size noise (~1e-6 in float32 on CPU GEMMs) does not blur the check."""
    sets = row_sets(spec)
    unet.double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in unet_inputs(len(sets)).items()}
    banked = install_banked(unet, spec, "unet")
    packed = pack_banks(sets, spec, R, P, dtype=torch.float64)
    with torch.no_grad():
        with banked.activate(packed.unet, packed.adapter_slot):
            batched = unet(**inputs).sample
        for n, adapter_set in enumerate(sets):
            alone_banks = pack_banks([adapter_set], spec, R, P, dtype=torch.float64)
            with banked.activate(alone_banks.unet, alone_banks.adapter_slot):
                alone = unet(**{k: v[n : n + 1] for k, v in inputs.items()}).sample
            torch.testing.assert_close(batched[n : n + 1], alone, atol=1e-12, rtol=0)


def test_banked_lora_equals_merged_weights(
    unet: UNet2DConditionModel, text_encoder: CLIPTextModel, spec: BackboneSpec
) -> None:
    lora = random_lora(spec, [t.name for t in spec.lora_targets], rank=2, alpha=1.0, seed=3)
    ids = torch.randint(0, text_encoder.config.vocab_size, (1, 77), generator=torch.Generator().manual_seed(0))
    inputs = unet_inputs(1)
    packed = pack_banks([[(lora, 0.3)]], spec, R, P)
    with torch.no_grad():
        banked_unet, banked_te = install_banked(unet, spec, "unet"), install_banked(text_encoder, spec, "text_encoder")
        with banked_unet.activate(packed.unet, packed.adapter_slot):
            got_noise = unet(**inputs).sample
        with banked_te.activate(packed.text_encoder, packed.adapter_slot):
            got_hidden = text_encoder(ids).last_hidden_state
        base_hidden = text_encoder(ids).last_hidden_state
        for model, component in ((unet, "unet"), (text_encoder, "text_encoder")):
            for module in model.modules():
                if isinstance(module, BankedLoRA):
                    layer = lora.layers[spec.targets(component)[module.index].name]
                    delta = 0.3 * lora_scale(layer) * delta_weight(layer.down, layer.up)
                    module.weight += delta.view_as(module.weight) if module.conv1x1 else delta
        want_noise, want_hidden = unet(**inputs).sample, text_encoder(ids).last_hidden_state
    torch.testing.assert_close(got_noise, want_noise, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_hidden, want_hidden, atol=1e-5, rtol=0)
    assert (got_hidden - base_hidden).abs().max() > 1e-3


def test_text_encoder_slot_zero_is_bitwise_base(text_encoder: CLIPTextModel, spec: BackboneSpec) -> None:
    lora = random_lora(spec, [t.name for t in spec.targets("text_encoder")], rank=4, alpha=4.0, seed=4)
    ids = torch.randint(0, text_encoder.config.vocab_size, (3, 77), generator=torch.Generator().manual_seed(1))
    packed = pack_banks([None, [(lora, 1.0)], None], spec, R, P)
    with torch.no_grad():
        base = text_encoder(ids).last_hidden_state
        banked = install_banked(text_encoder, spec, "text_encoder")
        with banked.activate(packed.text_encoder, packed.adapter_slot):
            out = text_encoder(ids).last_hidden_state
    assert torch.equal(out[[0, 2]], base[[0, 2]]) and not torch.allclose(out[1], base[1])


def test_misuse_is_reported(unet: UNet2DConditionModel, spec: BackboneSpec) -> None:
    banked = install_banked(unet, spec, "unet")
    with pytest.raises(AdapterError, match="already installed"):
        install_banked(unet, spec, "unet")
    packed = pack_banks([None, None], spec, R, P)
    with pytest.raises(AdapterError, match="banks lack vpt.0"):
        with banked.activate({k: v for k, v in packed.unet.items() if not k.startswith("vpt")}, packed.adapter_slot):
            pass
    with torch.no_grad(), pytest.raises(AdapterError, match="adapter_slot has 2 rows but the batch has 3"):
        with banked.activate(packed.unet, packed.adapter_slot):
            unet(**unet_inputs(3))
    assert banked.state.banks is None  # deactivated even after an error
