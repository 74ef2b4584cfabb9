"""An LRU bounded by the bytes of the tensors its entries hold: the engine's caches of packed adapter rows
and banks. A count bound would let memory scale with R, the backbone's widths and the batch compositions;
a byte bound is what an operator can size against the machine.

An entry larger than the whole bound is not cached: the caller still gets its value (it is used for the
batch at hand and freed afterwards) and packs it again on its next use. Keeping it alone would break the
bound by its own size and flush every other entry to make room for one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

import torch

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """The bytes these tensors keep alive: each distinct storage once, whole (a view holds its base)."""
    storages: dict[tuple[int, torch.device], int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[(storage.data_ptr(), t.device)] = storage.nbytes()
    return sum(storages.values())


class ByteLRU(Generic[K, V]):
    """Least recently used entries go first once the held bytes would exceed `max_bytes` (0: keep nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0  # held now: the sum of the kept entries' sizes
        self.evictions = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        if (entry := self._entries.get(key)) is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Keep `value` as the most recently used, evicting the least recently used to fit; False (and
        nothing evicted) when it alone exceeds the bound."""
        if nbytes > self.max_bytes:
            return False
        if (old := self._entries.pop(key, None)) is not None:
            self.bytes -= old[1]
        while self._entries and self.bytes + nbytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1
        self._entries[key] = (value, nbytes)
        self.bytes += nbytes
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
