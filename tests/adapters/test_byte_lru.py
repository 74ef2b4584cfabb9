from __future__ import annotations

import pytest
import torch

from adapters.byte_lru import ByteLRU, tensor_bytes


def test_bound_holds_and_the_least_recently_used_go_first() -> None:
    lru: ByteLRU[str, str] = ByteLRU(max_bytes=100)
    for key in "abc":
        assert lru.put(key, key.upper(), 30)
    assert lru.bytes == 90 and len(lru) == 3
    assert lru.get("a") == "A"  # a is now the most recently used: b is next out
    assert lru.put("d", "D", 30)
    assert "b" not in lru and lru.get("b") is None
    assert lru.bytes == 90 and lru.evictions == 1
    assert lru.put("e", "E", 70)  # needs two entries' room: c, then a
    assert [k for k in "acde" if k in lru] == ["d", "e"]
    assert lru.bytes == 100 and lru.evictions == 3


def test_an_entry_larger_than_the_bound_is_not_kept_and_evicts_nothing() -> None:
    lru: ByteLRU[str, str] = ByteLRU(max_bytes=100)
    lru.put("small", "s", 60)
    assert not lru.put("huge", "h", 101)
    assert "huge" not in lru and lru.get("small") == "s"
    assert lru.bytes == 60 and lru.evictions == 0
    assert lru.put("exact", "x", 100)  # the bound itself fits, alone
    assert [k for k in ("small", "exact") if k in lru] == ["exact"] and lru.bytes == 100


def test_replacing_a_key_counts_its_bytes_once() -> None:
    lru: ByteLRU[str, int] = ByteLRU(max_bytes=100)
    lru.put("a", 1, 40)
    lru.put("b", 2, 40)
    lru.put("a", 3, 50)  # 40 of the old "a" leave first: no eviction needed
    assert lru.get("a") == 3 and "b" in lru
    assert lru.bytes == 90 and lru.evictions == 0


def test_zero_bytes_keeps_nothing_and_a_negative_bound_is_refused() -> None:
    lru: ByteLRU[str, int] = ByteLRU(max_bytes=0)
    assert not lru.put("a", 1, 1) and len(lru) == 0
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        ByteLRU(max_bytes=-1)


def test_tensor_bytes_counts_each_storage_once_and_whole() -> None:
    base = torch.zeros(10, 8)  # 320 bytes
    other = torch.zeros(3, dtype=torch.float64)  # 24 bytes
    assert tensor_bytes([base, other]) == 344
    assert tensor_bytes([base, base[2:4], base.T]) == 320  # views share their base's storage
    assert tensor_bytes([base[0]]) == 320  # a small view keeps the whole base alive
    assert tensor_bytes([]) == 0
