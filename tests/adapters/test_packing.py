from __future__ import annotations

import pytest
import torch

from adapters.errors import AdapterError
from adapters.lora import delta_weight, lora_scale
from adapters.packing import PackedRowCache, adapter_set_key, pack_banks, pack_rows
from adapters.spec import BackboneSpec
from adapters.types import LoRAAdapter
from adapters.validate import RANK_SETTING
from tests.adapters.builders import random_lora, random_ti, random_vpt

R, P = 8, 4  # R: the rank cap
Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TE_V = "text_encoder.encoder.layers.1.self_attn.v_proj"


@pytest.fixture
def adapters(spec: BackboneSpec) -> dict:
    return {
        "lora": random_lora(spec, [Q, TE_V], rank=4, alpha=8.0, seed=0),
        "lora2": random_lora(spec, [Q], rank=2, alpha=2.0, seed=1),
        "shallow": random_vpt(spec, "shallow", 2, seed=2),
        "deep": random_vpt(spec, "deep", 3, seed=3),
        "ti": random_ti({"<cat>": 2}, 32, seed=4),
    }


def test_names_and_shapes_follow_the_contract(spec: BackboneSpec, adapters: dict) -> None:
    packed = pack_banks([[(adapters["lora"], 1.0)], None], spec, R, P)
    n_unet, n_te = len(spec.targets("unet")), len(spec.targets("text_encoder"))
    assert set(packed.unet) == {f"lora_{ab}.{i}" for ab in "ab" for i in range(n_unet)} | {
        f"{name}.{j}" for name in ("vpt", "vpt_mask") for j in range(4)
    }
    assert set(packed.text_encoder) == {f"lora_{ab}.{i}" for ab in "ab" for i in range(n_te)}
    i = spec.target_index[Q][1]
    # The set's rank 4 is the call's bucket (4), under the cap R = 8.
    assert packed.unet[f"lora_a.{i}"].shape == (2, 4, 32) and packed.unet[f"lora_b.{i}"].shape == (2, 32, 4)
    assert packed.unet["vpt.3"].shape == (2, P, 64) and packed.unet["vpt_mask.3"].shape == (2, P)
    assert all(t[0].abs().sum() == 0 for t in (*packed.unet.values(), *packed.text_encoder.values()))  # slot 0
    assert packed.adapter_slot.tolist() == [1, 0] and packed.adapter_slot.dtype == torch.int64


def test_slot_rows_hold_the_scaled_delta(spec: BackboneSpec, adapters: dict) -> None:
    lora, lora2 = adapters["lora"], adapters["lora2"]
    packed = pack_banks([[(lora, 0.5), (lora2, 2.0)]], spec, R, P)
    i = spec.target_index[Q][1]
    want = sum(
        w * lora_scale(a.layers[Q]) * delta_weight(a.layers[Q].down, a.layers[Q].up)
        for a, w in ((lora, 0.5), (lora2, 2.0))
    )
    torch.testing.assert_close(delta_weight(packed.unet[f"lora_a.{i}"][1], packed.unet[f"lora_b.{i}"][1]), want)
    j = spec.target_index[TE_V][1]
    assert packed.text_encoder[f"lora_b.{j}"][1].abs().sum() > 0
    assert sum(packed.unet[f"lora_b.{k}"][1].abs().sum() > 0 for k in range(len(spec.targets("unet")))) == 1


def test_one_slot_per_distinct_set(spec: BackboneSpec, adapters: dict) -> None:
    a = [(adapters["lora"], 1.0)]
    b = [(adapters["lora"], 0.5)]  # another weight: another set
    c = [(adapters["ti"], 1.0)]  # textual inversion only: nothing in the banks
    packed = pack_banks([a, b, None, a, c, [], b], spec, R, P)
    assert packed.adapter_slot.tolist() == [1, 2, 0, 1, 0, 0, 2]
    assert packed.slot_keys == ("", adapter_set_key(a), adapter_set_key(b))
    assert packed.unet["lora_a.0"].shape[0] == 3


def test_vpt_masks_are_per_block(spec: BackboneSpec, adapters: dict) -> None:
    packed = pack_banks([[(adapters["shallow"], 1.0)], [(adapters["deep"], 1.0)]], spec, R, P)
    assert packed.unet["vpt_mask.0"].tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert packed.unet["vpt_mask.1"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert torch.equal(packed.unet["vpt.2"][2, :3], adapters["deep"].tokens[2])


def test_errors(spec: BackboneSpec, adapters: dict) -> None:
    with pytest.raises(AdapterError, match="need rank 6 on .*allows 4") as refused:
        pack_banks([[(adapters["lora"], 1.0), (adapters["lora2"], 1.0)]], spec, 4, P)
    assert RANK_SETTING in str(refused.value)  # where the operator raises the cap
    stray = LoRAAdapter({"unet.conv_in": adapters["lora"].layers[Q]})
    with pytest.raises(AdapterError, match="does not cover: unet.conv_in"):
        pack_banks([[(stray, 1.0)]], spec, R, P)


def test_cache_is_an_lru_keyed_by_content(spec: BackboneSpec, adapters: dict) -> None:
    sets = [[(adapters[name], 1.0)] for name in ("lora", "lora2", "deep")]
    sizes = [pack_rows(s, spec, R, P).nbytes for s in sets]
    cache = PackedRowCache(max_bytes=sizes[0] + max(sizes[1:]))  # room for sets[0] and one other
    first = cache.get(sets[0], spec, R, P)
    again = random_lora(spec, [Q, TE_V], rank=4, alpha=8.0, seed=0)  # equal content, another object
    assert cache.get([(again, 1.0)], spec, R, P) is first
    cache.get(sets[1], spec, R, P)
    cache.get(sets[0], spec, R, P)  # refreshes sets[0]
    cache.get(sets[2], spec, R, P)  # evicts sets[1]
    assert len(cache) == 2 and cache.get(sets[0], spec, R, P) is first
    assert cache.bytes == sizes[0] + sizes[2] <= cache.max_bytes and cache.evictions == 1
    packed = pack_banks([sets[0], sets[2]], spec, R, P, cache=cache)
    assert packed.adapter_slot.tolist() == [1, 2]
    assert cache.get(sets[0], spec, R + 1, P) is not first  # another export shape: packed again


def test_cache_bytes_are_the_rows_tensors(spec: BackboneSpec, adapters: dict) -> None:
    rows = pack_rows([(adapters["lora"], 1.0), (adapters["deep"], 1.0)], spec, R, P)
    targets = {t.name: t for t in spec.lora_targets}
    rank = 4  # the set's own: rows are not padded to the cap
    lora = sum((rank * targets[name].d_in + targets[name].d_out * rank) * 4 for name in (Q, TE_V))  # float32 A, B
    vpt = sum((P * dim + P) * 4 for dim in spec.vpt_dims)
    assert rows.nbytes == lora + vpt


def test_a_set_larger_than_the_bound_is_packed_but_not_kept(spec: BackboneSpec, adapters: dict) -> None:
    small, big = [(adapters["lora2"], 1.0)], [(adapters["lora"], 1.0), (adapters["deep"], 1.0)]
    cache = PackedRowCache(max_bytes=pack_rows(small, spec, R, P).nbytes)
    cache.get(small, spec, R, P)
    packed = pack_banks([big, small], spec, R, P, cache=cache)
    want = pack_banks([big, small], spec, R, P)
    assert all(torch.equal(packed.unet[k], want.unet[k]) for k in want.unet)  # usable as if cached
    assert len(cache) == 1 and cache.bytes == cache.max_bytes  # only the small set is kept
    assert cache.get(big, spec, R, P) is not cache.get(big, spec, R, P)  # packed on every use


def test_pack_banks_fills_an_empty_cache(spec: BackboneSpec, adapters: dict) -> None:
    cache = PackedRowCache(max_bytes=1 << 30)
    pack_banks([[(adapters["lora"], 1.0)], [(adapters["ti"], 1.0)], None], spec, R, P, cache=cache)
    assert len(cache) == 1  # the LoRA set; sets without bank rows are not kept (nothing to save)


def test_banks_only_for_the_components_asked(spec: BackboneSpec, adapters: dict) -> None:
    sets = [[(adapters["lora"], 1.0)], [(adapters["deep"], 1.0)]]
    both = pack_banks(sets, spec, R, P)
    unet = pack_banks(sets, spec, R, P, components=("unet",))
    text = pack_banks(sets, spec, R, P, components=("text_encoder",))
    assert unet.text_encoder == {} and text.unet == {}
    assert all(torch.equal(unet.unet[k], both.unet[k]) for k in both.unet)
    assert all(torch.equal(text.text_encoder[k], both.text_encoder[k]) for k in both.text_encoder)
    assert unet.nbytes + text.nbytes == both.nbytes + both.adapter_slot.nbytes  # each holds its own slot map


def lora_bank(packed_component: dict[str, torch.Tensor], spec: BackboneSpec, name: str) -> tuple:
    i = spec.target_index[name][1]
    return packed_component[f"lora_a.{i}"], packed_component[f"lora_b.{i}"]


def test_each_call_takes_the_bucket_of_its_largest_rank(spec: BackboneSpec) -> None:
    small = [(random_lora(spec, [Q, TE_V], rank=3, alpha=3.0, seed=5), 1.0)]
    middle = [(random_lora(spec, [Q], rank=20, alpha=8.0, seed=6), 1.0)]
    large = [(random_lora(spec, [Q], rank=100, alpha=8.0, seed=7), 1.0)]
    cap = 128
    ranks = {
        "small": pack_banks([small, None], spec, cap, P),
        "small+middle": pack_banks([small, middle], spec, cap, P),
        "all": pack_banks([small, middle, large, None], spec, cap, P),
    }
    assert {k: lora_bank(p.unet, spec, Q)[0].shape[1] for k, p in ranks.items()} == {
        "small": 4,
        "small+middle": 32,
        "all": 128,
    }
    # Every bank of a graph shares the call's rank, targets without rows included (one rank axis per graph).
    assert {b.shape[1] for k, b in ranks["small+middle"].unet.items() if k.startswith("lora_a.")} == {32}
    # The text encoder's rank follows its own targets' rows: only `small` touches one.
    assert {b.shape[2] for k, b in ranks["all"].text_encoder.items() if k.startswith("lora_b.")} == {4}
    # A call of no LoRA (slot 0 only, or a VPT) takes the smallest bucket.
    assert pack_banks([None], spec, cap, P).unet["lora_a.0"].shape == (1, 4, 32)
    # A cap under the smallest bucket is the only rank.
    assert pack_banks([None], spec, 2, P).unet["lora_a.0"].shape == (1, 2, 32)


def test_padding_to_any_bucket_adds_exactly_nothing(spec: BackboneSpec, adapters: dict) -> None:
    """A slot's rows sit unchanged in the leading rank positions and the rest of its bank is zero: the padded terms
    of its product are exact zeros, whatever the call's rank (and whatever its neighbours). The products below
    may still differ in the last bit, where a BLAS sums the same nonzero terms in another order for another shape."""
    sets = [[(adapters["lora"], 0.5), (adapters["lora2"], 2.0)]]  # rank 4 + 2 = 6 on Q: bucket 8
    large = [(random_lora(spec, [Q], rank=100, alpha=8.0, seed=7), 1.0)]
    alone = pack_banks(sets, spec, 128, P)
    beside_large = pack_banks([*sets, large], spec, 128, P)  # bucket 128
    fixed = pack_banks(sets, spec, 16, P, fixed_rank=True)  # an older export's R
    rows = pack_rows(sets[0], spec, 128, P).lora[Q]
    for packed, rank in ((alone, 8), (beside_large, 128), (fixed, 16)):
        down, up = lora_bank(packed.unet, spec, Q)
        assert down.shape[1] == up.shape[2] == rank
        assert torch.equal(down[1, :6], rows[0]) and torch.equal(up[1, :, :6], rows[1])
        assert down[1, 6:].abs().sum() == 0 and up[1, :, 6:].abs().sum() == 0
        torch.testing.assert_close(delta_weight(down[1], up[1]), delta_weight(*rows), atol=1e-6, rtol=0)
        x = torch.randn(7, 32, generator=torch.Generator().manual_seed(0))
        # The banked LoRA's product, (x A^T) B^T, as `BankedLoRA` computes it.
        got, want = (x @ down[1].T) @ up[1].T, (x @ rows[0].T) @ rows[1].T
        # A BLAS sums the same terms in another order for another inner size: last-bit differences, on the scale
        # of the terms summed rather than of each entry (a fixed 1e-6 failed on a small entry).
        assert float((got - want).abs().max()) <= 1e-6 * float(want.abs().max()), float(want.abs().max())


def test_fixed_rank_packs_every_call_at_the_cap(spec: BackboneSpec, adapters: dict) -> None:
    packed = pack_banks([[(adapters["lora2"], 1.0)], None], spec, 16, P, fixed_rank=True)
    assert {b.shape[1] for k, b in packed.unet.items() if k.startswith("lora_a.")} == {16}
    assert {b.shape[1] for k, b in packed.text_encoder.items() if k.startswith("lora_a.")} == {16}
    assert pack_banks([None], spec, 16, P, fixed_rank=True).unet["lora_a.0"].shape == (1, 16, 32)


def test_cached_rows_serve_calls_of_every_rank(spec: BackboneSpec, adapters: dict) -> None:
    """The row cache holds a set once, at its own rank, whatever rank the calls it joins take."""
    small = [(adapters["lora"], 1.0)]
    large = [(random_lora(spec, [Q], rank=100, alpha=8.0, seed=7), 1.0)]
    cache = PackedRowCache(max_bytes=1 << 30)
    first = cache.get(small, spec, 128, P)
    alone = pack_banks([small], spec, 128, P, cache=cache)
    mixed = pack_banks([small, large], spec, 128, P, cache=cache)
    assert lora_bank(alone.unet, spec, Q)[0].shape[1] == 4 and lora_bank(mixed.unet, spec, Q)[0].shape[1] == 128
    assert len(cache) == 2 and cache.get(small, spec, 128, P) is first
    assert first.lora[Q][0].shape == (4, 32)
