from __future__ import annotations

import pytest
import torch

from adapters.errors import AdapterError
from adapters.lora import concat_layers, delta_weight, lora_rows, lora_scale, pad_rank
from adapters.types import LoRAAdapter, LoRALayer


def layer(rank: int, alpha: float, seed: int, d_in: int = 6, d_out: int = 5) -> LoRALayer:
    g = torch.Generator().manual_seed(seed)
    return LoRALayer(torch.randn(rank, d_in, generator=g), torch.randn(d_out, rank, generator=g), alpha)


def test_scale_is_alpha_over_rank_times_weight() -> None:
    assert lora_scale(layer(4, 8.0, 0), 0.5) == pytest.approx(1.0)
    assert lora_scale(layer(2, 2.0, 0)) == 1.0


def test_concatenation_equals_sum_of_scaled_deltas() -> None:
    a, b = layer(2, 1.0, 1), layer(3, 6.0, 2)
    down, up = concat_layers([(a, 0.7), (b, -1.5)])
    assert down.shape == (5, 6) and up.shape == (5, 5)
    want = 0.7 * 0.5 * (a.up @ a.down) - 1.5 * 2.0 * (b.up @ b.down)
    torch.testing.assert_close(delta_weight(down, up), want)


def test_padding_adds_nothing() -> None:
    down, up = concat_layers([(layer(3, 3.0, 3), 1.0)])
    padded = pad_rank(down, up, 8)
    assert padded[0].shape == (8, 6) and padded[1].shape == (5, 8)
    assert torch.equal(delta_weight(*padded), delta_weight(down, up))
    with pytest.raises(ValueError):
        pad_rank(down, up, 2)


def test_rows_per_module_and_rank_budget() -> None:
    first = LoRAAdapter({"unet.x": layer(4, 4.0, 4), "unet.y": layer(4, 4.0, 5)})
    second = LoRAAdapter({"unet.x": layer(4, 4.0, 6)})
    rows = lora_rows([(first, 1.0), (second, 1.0)], rank=8)
    assert set(rows) == {"unet.x", "unet.y"}
    assert rows["unet.x"][0].shape == (8, 6) and rows["unet.y"][0][4:].abs().sum() == 0
    with pytest.raises(AdapterError, match="need rank 8 on unet.x together; this export allows 6"):
        lora_rows([(first, 1.0), (second, 1.0)], rank=6)
