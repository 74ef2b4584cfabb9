"""Adapter sets -> slot banks, the graph inputs of the contract (docs/graph-contract.md).

Per graph (`unet`, `text_encoder`, SDXL's `text_encoder_2`), for its i-th LoRA target
(`BackboneSpec.targets(component)[i]`): `lora_a.{i}` [S, R, d_in] and `lora_b.{i}` [S, d_out, R]; for the
U-Net's j-th transformer block: `vpt.{j}` [S, P, d_j] and `vpt_mask.{j}` [S, P] (1 = token present). Slot 0 is
all zeros: no adapter.
Rows point at slots with `adapter_slot` [N]. Each distinct adapter set of a batch gets one slot; its
rows are packed once, at the set's own rank, and kept in an LRU keyed by a hash of the set, bounded by the
bytes of its tensors. R is per call and per graph: the bucket of the largest rank among the call's slots
(`adapters.lora.rank_bucket`), up to the cap; an export made before the rank axis was dynamic takes banks of
exactly its cap (`fixed_rank`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from adapters.byte_lru import ByteLRU, tensor_bytes
from adapters.errors import AdapterError, listing
from adapters.lora import lora_rows, rank_bucket
from adapters.spec import COMPONENTS, BackboneSpec
from adapters.types import AdapterSet
from adapters.vpt import vpt_rows

ADAPTER_SLOT = "adapter_slot"
VPT_MASK = "vpt_mask"
# The LoRA banks' rank axis in the graphs: each call's banks carry their own rank, up to the cap (the manifest's
# `lora_rank`), one value for every bank of a graph in a call. Exports made before it fixed the axis at R.
RANK_AXIS = "rank"


def lora_a_name(i: int) -> str:
    return f"lora_a.{i}"


def lora_b_name(i: int) -> str:
    return f"lora_b.{i}"


def is_lora_bank(name: str) -> bool:
    return name.startswith(("lora_a.", "lora_b."))  # `lora_a_name` / `lora_b_name`


def vpt_name(j: int) -> str:
    return f"vpt.{j}"


def vpt_mask_name(j: int) -> str:
    return f"{VPT_MASK}.{j}"


def adapter_set_key(adapter_set: AdapterSet | None) -> str:
    """Stable across processes: the adapters' content digests with their weights, in request order."""
    h = hashlib.sha256()
    for adapter, weight in adapter_set or ():
        h.update(f"{adapter.kind}:{adapter.digest}:{float(weight)!r};".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class SlotRows:
    """One adapter set's bank rows: only what it touches, the rest of its slot stays zero."""

    key: str
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]]  # canonical module -> (A [r, d_in], B [d_out, r]), own rank r
    vpt: list[tuple[torch.Tensor, torch.Tensor]] | None  # per block: (tokens [P, d_j], mask [P])

    @property
    def is_empty(self) -> bool:
        """Nothing in the banks (no adapters, or textual inversion only): the set runs in slot 0."""
        return not self.lora and self.vpt is None

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self._tensors())

    def lora_rank(self, targets: Sequence[str]) -> int:
        """The largest rank of this set's rows on `targets` (0 where it has none)."""
        return max((self.lora[t][0].shape[0] for t in targets if t in self.lora), default=0)

    def _tensors(self) -> Iterator[torch.Tensor]:
        for pair in self.lora.values():
            yield from pair
        for pair in self.vpt or ():
            yield from pair


def pack_rows(adapter_set: AdapterSet | None, spec: BackboneSpec, max_rank: int, max_vpt_tokens: int) -> SlotRows:
    adapter_set = adapter_set or ()
    lora = lora_rows(adapter_set, max_rank)
    if unknown := sorted(set(lora) - set(spec.target_index)):
        raise AdapterError(f"LoRA layers on modules this export does not cover: {listing(unknown)}")
    return SlotRows(adapter_set_key(adapter_set), lora, vpt_rows(adapter_set, spec, max_vpt_tokens))


class PackedRowCache:
    """LRU of packed rows per (backbone, rank cap, P, adapter set), bounded by the bytes of the rows it holds: a
    repeated set costs a dict lookup. A set whose rows alone exceed the bound is packed on every use.

    Rows are kept at the set's own rank, so one entry serves every call the set joins, whatever rank its
    neighbours make the call's banks; the cap is in the key only because it decides whether the set packs."""

    def __init__(self, max_bytes: int) -> None:
        self._rows: ByteLRU[tuple[str, int, int, str], SlotRows] = ByteLRU(max_bytes)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def max_bytes(self) -> int:
        return self._rows.max_bytes

    @property
    def bytes(self) -> int:
        """Held now (<= max_bytes)."""
        return self._rows.bytes

    @property
    def evictions(self) -> int:
        return self._rows.evictions

    def get(self, adapter_set: AdapterSet | None, spec: BackboneSpec, max_rank: int, max_vpt_tokens: int) -> SlotRows:
        key = (spec.fingerprint, max_rank, max_vpt_tokens, adapter_set_key(adapter_set))
        if (rows := self._rows.get(key)) is not None:
            return rows
        rows = pack_rows(adapter_set, spec, max_rank, max_vpt_tokens)
        if not rows.is_empty:  # no tensors: as cheap to pack again, and many would be held for 0 bytes
            self._rows.put(key, rows, rows.nbytes)
        return rows

    def clear(self) -> None:
        self._rows.clear()


@dataclass(frozen=True)
class PackedBanks:
    unet: dict[str, torch.Tensor]  # lora_a.{i}, lora_b.{i}, vpt.{j}, vpt_mask.{j}
    text_encoder: dict[str, torch.Tensor]  # lora_a.{i}, lora_b.{i}
    adapter_slot: torch.Tensor  # [N] int64: row -> slot
    slot_keys: tuple[str, ...]  # slot -> adapter set key ("" for slot 0)
    # SDXL's second text encoder: lora_a.{i}, lora_b.{i}; empty for SD-1.x/2.x (last, with a default, so
    # positional construction as before SDXL still works)
    text_encoder_2: dict[str, torch.Tensor] = field(default_factory=dict)

    def banks(self, component: str) -> dict[str, torch.Tensor]:
        """One graph's banks by component name (`adapters.spec.COMPONENTS`)."""
        if component not in COMPONENTS:
            raise AdapterError(f"no banks for {component!r}: components are {', '.join(COMPONENTS)}")
        return getattr(self, component)

    @property
    def nbytes(self) -> int:
        banks = [t for c in COMPONENTS for t in self.banks(c).values()]
        return tensor_bytes([*banks, self.adapter_slot])


def pack_banks(
    row_sets: Sequence[AdapterSet | None],
    spec: BackboneSpec,
    max_rank: int,
    max_vpt_tokens: int,
    cache: PackedRowCache | None = None,
    dtype: torch.dtype = torch.float32,
    components: Sequence[str] = COMPONENTS,
    fixed_rank: bool = False,
) -> PackedBanks:
    """One adapter set per batch row (None / empty = no adapter) -> banks with one slot per distinct set.

    Each graph's LoRA banks take the rank bucket of the largest rank among the slots on that graph's targets
    (`rank_bucket`; at most `max_rank`), or exactly `max_rank` with `fixed_rank` (an export whose graphs fix
    the rank axis). Only the graphs in `components` get banks (the others' stay empty): the engine runs the
    text encoder and the U-Net at different times, and banks it would not pass to a graph are memory for nothing.
    A component the spec has no targets for (`text_encoder_2` on SD-1.x/2.x) gets empty banks.
    """
    slots: list[SlotRows] = []
    slot_of: dict[str, int] = {}
    adapter_slot = []
    for adapter_set in row_sets:
        rows = (
            cache.get(adapter_set, spec, max_rank, max_vpt_tokens)
            if cache is not None  # not `if cache`: an empty cache is falsy (len 0) and would never fill
            else pack_rows(adapter_set, spec, max_rank, max_vpt_tokens)
        )
        if rows.is_empty:
            adapter_slot.append(0)
            continue
        if rows.key not in slot_of:
            slot_of[rows.key] = len(slots) + 1
            slots.append(rows)
        adapter_slot.append(slot_of[rows.key])
    banks: dict[str, dict[str, torch.Tensor]] = {c: {} for c in COMPONENTS}
    for c in components:
        rank = max_rank if fixed_rank else call_rank(spec, c, slots, max_rank)
        banks[c] = _lora_banks(spec, c, slots, rank, dtype)
    if "unet" in components:
        banks["unet"] |= _vpt_banks(spec, slots, max_vpt_tokens, dtype)
    return PackedBanks(
        unet=banks["unet"],
        text_encoder=banks["text_encoder"],
        adapter_slot=torch.tensor(adapter_slot, dtype=torch.int64),
        slot_keys=("", *(s.key for s in slots)),
        text_encoder_2=banks["text_encoder_2"],
    )


def call_rank(spec: BackboneSpec, component: str, slots: Sequence[SlotRows], cap: int) -> int:
    """The rank of `component`'s banks in a call of `slots`: one for all its targets, as the graph's banks share
    one rank axis (TensorRT holds same-named dims equal)."""
    targets = [t.name for t in spec.targets(component)]
    return rank_bucket(max((rows.lora_rank(targets) for rows in slots), default=0), cap)


def _lora_banks(
    spec: BackboneSpec, component: str, slots: list[SlotRows], rank: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Zero banks of the call's rank with each slot's rows in their leading rank positions: the zero rows of A
    and columns of B beyond a slot's own rank add exactly nothing to its rows' outputs."""
    banks = {}
    for i, target in enumerate(spec.targets(component)):
        down = torch.zeros(len(slots) + 1, rank, target.d_in, dtype=dtype)
        up = torch.zeros(len(slots) + 1, target.d_out, rank, dtype=dtype)
        for s, rows in enumerate(slots, start=1):
            if (pair := rows.lora.get(target.name)) is not None:
                r = pair[0].shape[0]
                down[s, :r], up[s, :, :r] = pair
        banks[lora_a_name(i)], banks[lora_b_name(i)] = down, up
    return banks


def _vpt_banks(spec: BackboneSpec, slots: list[SlotRows], tokens: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    banks = {}
    for j, dim in enumerate(spec.vpt_dims):
        prompt = torch.zeros(len(slots) + 1, tokens, dim, dtype=dtype)
        mask = torch.zeros(len(slots) + 1, tokens, dtype=dtype)
        for s, rows in enumerate(slots, start=1):
            if rows.vpt is not None:
                prompt[s], mask[s] = rows.vpt[j]
        banks[vpt_name(j)], banks[vpt_mask_name(j)] = prompt, mask
    return banks
