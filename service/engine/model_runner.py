"""The U-Net side of a tick: the scheduled rows -> one noise prediction each, in at most four runtime calls.

The slot banks hold one slot per distinct adapter set (slot 0 = none), at the rank bucket of the call's largest
LoRA rank (adapters/packing.py), cached per batch composition. Rows guided this step (guidance.py) run in ONE
fused-CFG call; every other row's cond row, and the uncond rows of the uncond-refresh rows due a refresh, run
in one plain call, and those rows are combined here with the same `classifier_free_guidance` the fused graph
traces. Rows on a step-caching shallow step (step_cache.py) run in a shallow call of each kind beside them.
A call whose rows are all in slot 0 is marked adapter-free, so the runtime may run its base graph, which skips
the banks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.byte_lru import ByteLRU
from adapters.packing import PackedBanks, PackedRowCache, pack_banks
from adapters.types import AdapterSet
from export.guidance import classifier_free_guidance
from service.engine.guidance import Guidance, row_guidance
from service.engine.job import ActiveRequest
from service.engine.step_cache import COND, UNCOND, CachedFeature, runs_shallow
from service.engine.text import TextConditioning
from service.runtime.base import Runtime


class ModelRunner:
    def __init__(self, runtime: Runtime, row_cache: PackedRowCache, bank_cache_bytes: int) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self.row_cache = row_cache  # shared with the text side (text.py): one copy per adapter set, at its own rank
        self.bank_cache: ByteLRU[tuple[str, ...], PackedBanks] = ByteLRU(bank_cache_bytes)
        self.calls = 0  # U-Net calls and rows run so far (a fused-CFG call over N requests runs 2N rows)
        self.rows = 0
        self.shallow_rows = 0  # of `rows`, those run on the U-Net's shallow path (step caching)

    def predict(self, entries: list[ActiveRequest]) -> list[torch.Tensor]:
        """Each entry's guided noise prediction [1, C, h, w] for its current step, in `entries`' order; the
        uncond-refresh rows keep their fresh uncond predictions (`uncond_pred`), the step-caching rows the deep
        features of their full steps (`features`)."""
        packed, slot_of = self._banks_for([(e.unet_key, e.request.unet_adapters()) for e in entries])
        modes = [row_guidance(e.request, e.step, len(e.timesteps), e.uncond_pred is not None) for e in entries]
        shallow = [
            runs_shallow(e.request.cache_interval, e.step, m, e.features) for e, m in zip(entries, modes, strict=True)
        ]
        call = _Call(entries, [e.model_input() for e in entries], slot_of, packed)
        out: dict[int, torch.Tensor] = {}  # entry index -> its prediction

        # Full and shallow steps run in separate calls (different graphs), each of the same rows' kinds.
        fused = [i for i, mode in enumerate(modes) if mode is Guidance.FUSED]
        for group in _by_depth(fused, shallow):
            noise = self._fused(call, group, shallow[group[0]])
            for k, i in enumerate(group):
                out[i] = noise[k : k + 1]

        # The plain calls' rows: the cond rows of the unguided, then of the refresh rows, then the uncond rows of the
        # refresh rows due one.
        unguided = [i for i, mode in enumerate(modes) if mode is Guidance.NONE]
        refresh = [i for i, mode in enumerate(modes) if mode in (Guidance.CACHED_UNCOND, Guidance.FRESH_UNCOND)]
        fresh = [i for i in refresh if modes[i] is Guidance.FRESH_UNCOND]
        rows = [(i, COND) for i in unguided + refresh] + [(i, UNCOND) for i in fresh]
        predicted: dict[tuple[int, str], torch.Tensor] = {}
        for depth in (False, True):
            group = [row for row in rows if shallow[row[0]] is depth]
            if group:
                noise = self._plain(call, group, depth)
                predicted |= {row: noise[k : k + 1] for k, row in enumerate(group)}
        for i in fresh:
            entries[i].uncond_pred = predicted[(i, UNCOND)]
        for i in unguided:
            out[i] = predicted[(i, COND)]
        if refresh:
            refreshed = [entries[i] for i in refresh]
            guided = classifier_free_guidance(
                torch.cat([predicted[(i, COND)] for i in refresh]),
                torch.cat([e.uncond_pred for e in refreshed]),
                _scales(refreshed),
            )
            for k, i in enumerate(refresh):
                out[i] = guided[k : k + 1]
        return [out[i] for i in range(len(entries))]

    def _fused(self, call: _Call, rows: list[int], shallow: bool) -> torch.Tensor:
        """One fused-CFG call over `rows` (entry indices): full, keeping the deep features of the step-caching rows,
        or shallow on theirs."""
        entries = [call.entries[i] for i in rows]
        slots = call.slots(entries)
        cond = TextConditioning.cat([e.cond for e in entries])
        uncond = TextConditioning.cat([e.uncond for e in entries])
        keep = not shallow and any(e.request.cache_interval > 1 for e in entries)
        result = self.runtime.unet_cfg(
            torch.cat([call.inputs[i][0] for i in rows]),
            torch.cat([call.inputs[i][1] for i in rows]),
            cond.hidden,
            uncond.hidden,
            _scales(entries),
            slots,
            call.packed.unet,
            adapter_free=_adapter_free(slots),
            added=_added(entries, cond, uncond),
            features=tuple(_stack([(e, side) for e in entries]) for side in (COND, UNCOND)) if shallow else None,
            return_features=keep,
        )
        self._count(2 * len(rows), shallow)
        if not keep:
            return result
        noise, cond_features, uncond_features = result
        _keep(entries, COND, cond_features)
        _keep(entries, UNCOND, uncond_features)
        return noise

    def _plain(self, call: _Call, rows: list[tuple[int, str]], shallow: bool) -> torch.Tensor:
        """One plain call over `rows` ((entry index, side): a cond or an uncond row), full or shallow as `_fused`."""
        entries = [call.entries[i] for i, _ in rows]
        slots = call.slots(entries)
        sides = [(entry, side) for entry, (_, side) in zip(entries, rows, strict=True)]
        context = TextConditioning.cat([e.cond if side == COND else e.uncond for e, side in sides])
        keep = not shallow and any(e.request.cache_interval > 1 for e in entries)
        result = self.runtime.unet(
            torch.cat([call.inputs[i][0] for i, _ in rows]),
            torch.cat([call.inputs[i][1] for i, _ in rows]),
            context.hidden,
            slots,
            call.packed.unet,
            adapter_free=_adapter_free(slots),
            added=_added(entries, context),
            features=(_stack(sides),) if shallow else None,
            return_features=keep,
        )
        self._count(len(rows), shallow)
        if not keep:
            return result
        noise, features = result
        for k, (entry, side) in enumerate(sides):
            _keep([entry], side, features[k : k + 1])
        return noise

    def _banks_for(self, sets: list[tuple[str, AdapterSet]]) -> tuple[PackedBanks, dict[str, int]]:
        """Banks with one slot per distinct adapter set, cached per batch composition."""
        distinct = list(dict.fromkeys(k for k, _ in sets))
        key = tuple(distinct)
        packed = self.bank_cache.get(key)
        if packed is None:
            chosen = {k: s for k, s in sets}
            packed = pack_banks(
                [chosen[k] for k in distinct],
                self.info.spec,
                self.info.lora_rank,
                self.info.vpt_tokens,
                cache=self.row_cache,
                components=("unet",),  # the text encoder's banks are packed at admission (text.py)
                fixed_rank=self.info.lora_rank_fixed,
            )
            self.bank_cache.put(key, packed, packed.nbytes)
        slot_of = {k: int(packed.adapter_slot[i]) for i, k in enumerate(distinct)}
        return packed, slot_of

    def _count(self, rows: int, shallow: bool) -> None:
        self.calls += 1
        self.rows += rows
        self.shallow_rows += rows if shallow else 0


@dataclass
class _Call:
    """What every U-Net call of a tick shares: the tick's entries, their model inputs, and the packed banks."""

    entries: list[ActiveRequest]
    inputs: list[tuple[torch.Tensor, torch.Tensor]]  # (sample, timestep) per entry
    slot_of: dict[str, int]
    packed: PackedBanks

    def slots(self, entries: list[ActiveRequest]) -> torch.Tensor:
        return torch.tensor([self.slot_of[e.unet_key] for e in entries], dtype=torch.int64)


def _by_depth(rows: list[int], shallow: list[bool]) -> list[list[int]]:
    """`rows` split into the full steps' and the shallow steps' (either may be absent)."""
    groups = [[i for i in rows if not shallow[i]], [i for i in rows if shallow[i]]]
    return [g for g in groups if g]


def _stack(rows: list[tuple[ActiveRequest, str]]) -> torch.Tensor:
    """The kept deep features of a shallow call's rows ((entry, side)), in that order."""
    return torch.cat([entry.features[side].value for entry, side in rows])


def _keep(entries: list[ActiveRequest], side: str, features: torch.Tensor) -> None:
    """Keep each step-caching entry's row of `features`, computed at its current step."""
    for k, entry in enumerate(entries):
        if entry.request.cache_interval > 1:
            entry.features[side] = CachedFeature(entry.step, features[k : k + 1].clone())


def _scales(entries: list[ActiveRequest]) -> torch.Tensor:
    """The rows' guidance scales [N], float32 as the fused graph takes them."""
    return torch.tensor([e.request.guidance_scale for e in entries], dtype=torch.float32)


def _added(
    entries: list[ActiveRequest], cond: TextConditioning, uncond: TextConditioning | None = None
) -> dict[str, torch.Tensor] | None:
    """SDXL's added conditioning of a call's rows (`Runtime.unet_cfg`'s `added`); None for SD-1.x/2.x."""
    if cond.pooled is None:
        return None
    added = {"text_embeds": cond.pooled, "time_ids": torch.cat([e.time_ids for e in entries])}
    if uncond is not None:
        added["uncond_text_embeds"] = uncond.pooled
    return added


def _adapter_free(slots: torch.Tensor) -> bool:
    """Every row in slot 0: banks come from `pack_banks`, whose slot 0 is all zeros, so the call is the base
    model's and the runtime may skip the banks (`Runtime.unet_cfg`'s `adapter_free`)."""
    return not bool(slots.any())
