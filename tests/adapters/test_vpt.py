"""VPT math: rows per block, and the claim that prepending prompt tokens equals extra keys / values."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from adapters.banked import BankState, VPTAttnProcessor
from adapters.errors import AdapterError
from adapters.spec import BackboneSpec
from adapters.vpt import convert_pre_norm_tokens, vpt_rows
from tests.adapters.builders import random_lora, random_vpt


def test_rows_shallow_deep_and_concatenation(spec: BackboneSpec) -> None:
    shallow, deep = random_vpt(spec, "shallow", 2, seed=0), random_vpt(spec, "deep", 3, seed=1)
    rows = vpt_rows([(shallow, 1.0), (deep, 1.0)], spec, tokens=6)
    assert rows is not None and len(rows) == 4
    block0, mask0 = rows[0]
    assert torch.equal(block0[:2], shallow.tokens[0]) and torch.equal(block0[2:5], deep.tokens[0])
    assert mask0.tolist() == [1, 1, 1, 1, 1, 0]
    block3, mask3 = rows[3]
    assert block3.shape == (6, 64) and mask3.tolist() == [1, 1, 1, 0, 0, 0]  # the shallow VPT stays in block 0
    assert torch.equal(block3[:3], deep.tokens[3]) and block3[3:].abs().sum() == 0


def test_rows_without_vpt_and_errors(spec: BackboneSpec) -> None:
    assert vpt_rows([(random_lora(spec, [], 1, 1.0, 0), 1.0)], spec, 4) is None
    with pytest.raises(AdapterError, match="hold 8 tokens together; this export allows 6"):
        vpt_rows([(random_vpt(spec, "deep", 4, 0), 1.0)] * 2, spec, tokens=6)
    with pytest.raises(AdapterError, match="take no weight"):
        vpt_rows([(random_vpt(spec, "deep", 4, 0), 0.5)], spec, tokens=6)


def test_extra_keys_equal_prepended_tokens(unet: UNet2DConditionModel) -> None:
    """Run a real block on [X; x] and drop the prompt positions == run it on x with the VPT processor and the
    tokens norm1(X): a token in attn1's input space is the prepended token after the block's norm1."""
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(3, 16, 32, generator=g), torch.randn(3, 77, 32, generator=g)
    bank = torch.randn(3, 4, 32, generator=g)  # slots 0..2, as tokens prepended before norm1
    mask = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)  # slot 2: 2 tokens
    slot = torch.tensor([2, 1, 0])
    with torch.no_grad():
        want = [
            block(
                torch.cat([bank[s, : int(mask[s].sum())][None], x[n : n + 1]], 1),
                encoder_hidden_states=context[n : n + 1],
            )
            for n, s in enumerate(slot.tolist())
        ]
        want = torch.cat([w[:, -16:] for w in want])
        state = BankState()
        block.attn1.set_processor(VPTAttnProcessor(block.attn1.processor, 0, state))
        state.banks, state.slot = {"vpt.0": convert_pre_norm_tokens(bank, block.norm1), "vpt_mask.0": mask}, slot
        got = block(x, encoder_hidden_states=context)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
