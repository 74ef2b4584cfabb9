"""The U-Net side of a tick: the scheduled rows -> one noise prediction each, in at most two runtime calls.

The slot banks hold one slot per distinct adapter set (slot 0 = none), at the rank bucket of the call's largest
LoRA rank (adapters/packing.py), cached per batch composition. Rows guided this step (guidance.py) run in ONE
fused-CFG call; every other row's cond row, and the uncond rows of the uncond-refresh rows due a refresh, run
in one plain call, and those rows are combined here with the same `classifier_free_guidance` the fused graph
traces. A call whose rows are all in slot 0 is marked
adapter-free, so the runtime may run its base graph, which skips the banks.
"""

from __future__ import annotations

import torch

from adapters.byte_lru import ByteLRU
from adapters.packing import PackedBanks, PackedRowCache, pack_banks
from adapters.types import AdapterSet
from export.guidance import classifier_free_guidance
from service.engine.guidance import Guidance, row_guidance
from service.engine.job import ActiveRequest
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

    def predict(self, entries: list[ActiveRequest]) -> list[torch.Tensor]:
        """Each entry's guided noise prediction [1, C, h, w] for its current step, in `entries`' order; the
        uncond-refresh rows keep their fresh uncond predictions (`uncond_pred`)."""
        packed, slot_of = self._banks_for([(e.unet_key, e.request.unet_adapters()) for e in entries])
        modes = [row_guidance(e.request, e.step, len(e.timesteps), e.uncond_pred is not None) for e in entries]
        inputs = [e.model_input() for e in entries]
        out: dict[int, torch.Tensor] = {}  # entry index -> its prediction

        fused = [i for i, mode in enumerate(modes) if mode is Guidance.FUSED]
        if fused:
            slots = torch.tensor([slot_of[entries[i].unet_key] for i in fused], dtype=torch.int64)
            cond = TextConditioning.cat([entries[i].cond for i in fused])
            uncond = TextConditioning.cat([entries[i].uncond for i in fused])
            noise = self.runtime.unet_cfg(
                torch.cat([inputs[i][0] for i in fused]),
                torch.cat([inputs[i][1] for i in fused]),
                cond.hidden,
                uncond.hidden,
                _scales([entries[i] for i in fused]),
                slots,
                packed.unet,
                adapter_free=_adapter_free(slots),
                added=_added([entries[i] for i in fused], cond, uncond),
            )
            self._count(2 * len(fused))
            for k, i in enumerate(fused):
                out[i] = noise[k : k + 1]

        # The plain call's rows: the cond rows of the unguided, then of the refresh rows, then the uncond rows
        # of the refresh rows due one.
        unguided = [i for i, mode in enumerate(modes) if mode is Guidance.NONE]
        refresh = [i for i, mode in enumerate(modes) if mode in (Guidance.CACHED_UNCOND, Guidance.FRESH_UNCOND)]
        fresh = [i for i in refresh if modes[i] is Guidance.FRESH_UNCOND]
        rows = [(i, entries[i].cond) for i in unguided + refresh] + [(i, entries[i].uncond) for i in fresh]
        if not rows:
            return [out[i] for i in range(len(entries))]
        slots = torch.tensor([slot_of[entries[i].unet_key] for i, _ in rows], dtype=torch.int64)
        context = TextConditioning.cat([text for _, text in rows])
        noise = self.runtime.unet(
            torch.cat([inputs[i][0] for i, _ in rows]),
            torch.cat([inputs[i][1] for i, _ in rows]),
            context.hidden,
            slots,
            packed.unet,
            adapter_free=_adapter_free(slots),
            added=_added([entries[i] for i, _ in rows], context),
        )
        self._count(len(rows))
        cond = {i: noise[k : k + 1] for k, i in enumerate(unguided + refresh)}
        for k, i in enumerate(fresh, start=len(unguided) + len(refresh)):
            entries[i].uncond_pred = noise[k : k + 1]
        for i in unguided:
            out[i] = cond[i]
        if refresh:
            refreshed = [entries[i] for i in refresh]
            guided = classifier_free_guidance(
                torch.cat([cond[i] for i in refresh]), torch.cat([e.uncond_pred for e in refreshed]), _scales(refreshed)
            )
            for k, i in enumerate(refresh):
                out[i] = guided[k : k + 1]
        return [out[i] for i in range(len(entries))]

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

    def _count(self, rows: int) -> None:
        self.calls += 1
        self.rows += rows


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
