from __future__ import annotations

import pytest
import torch

from adapters.errors import AdapterError
from adapters.lora import concat_layers, delta_weight, lora_rows, lora_scale, rank_bucket
from adapters.targets import DEFAULT_LORA_RANK
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


@pytest.mark.parametrize(
    ("rank", "cap", "bucket"),
    [
        (0, 128, 4),  # no LoRA in the call: the smallest bucket
        (1, 128, 4),
        (4, 128, 4),
        (5, 128, 8),
        (16, 128, 16),
        (17, 128, 32),
        (33, 128, 64),
        (128, 128, 128),
        (65, 100, 100),  # a cap that is not a power of two is the last bucket
        (64, 100, 64),
        (3, 3, 3),  # a cap under the smallest bucket is the only one
        (0, 2, 2),
    ],
)
def test_rank_buckets(rank: int, cap: int, bucket: int) -> None:
    assert rank_bucket(rank, cap) == bucket


def test_a_rank_over_the_cap_has_no_bucket() -> None:
    with pytest.raises(ValueError, match="outside 0 to the cap 16"):
        rank_bucket(17, 16)


def test_default_cap_is_128() -> None:
    assert DEFAULT_LORA_RANK == 128


def test_rows_per_module_keep_their_own_rank_within_the_cap() -> None:
    first = LoRAAdapter({"unet.x": layer(4, 4.0, 4), "unet.y": layer(4, 4.0, 5)})
    second = LoRAAdapter({"unet.x": layer(4, 4.0, 6)})
    rows = lora_rows([(first, 1.0), (second, 1.0)], max_rank=128)
    assert set(rows) == {"unet.x", "unet.y"}
    assert rows["unet.x"][0].shape == (8, 6) and rows["unet.x"][1].shape == (5, 8)  # 4 + 4, concatenated
    assert rows["unet.y"][0].shape == (4, 6) and rows["unet.y"][1].shape == (5, 4)  # not padded to the cap
    with pytest.raises(AdapterError, match="need rank 8 on unet.x together; this export allows 6") as refused:
        lora_rows([(first, 1.0), (second, 1.0)], max_rank=6)
    assert "DIFFPLEX_ENGINE__LORA_RANK" in str(refused.value) and "--lora-rank" in str(refused.value)
