"""Text side: batched prompt encoding with per-row TI splicing and text-encoder LoRA banks, and the
cache of unconditional embeddings per (negative prompt, text-side adapter set)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPTokenizer

from adapters.byte_lru import ByteLRU, tensor_bytes
from adapters.packing import PackedRowCache, adapter_set_key, pack_banks
from adapters.textual_inversion import build_inputs_embeds_batch
from adapters.types import AdapterSet
from service.runtime.base import Runtime


class PromptEncoder:
    def __init__(self, runtime: Runtime, row_cache: PackedRowCache, uncond_cache_bytes: int) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self.tokenizer = CLIPTokenizer.from_pretrained(self.info.tokenizer_dir)
        self.row_cache = row_cache
        # Bytes, not entries: one entry is [77, D] floats, 39 KiB here but 231 KiB for SD-1.5's D = 768.
        self.uncond_cache: ByteLRU[tuple[str, str], torch.Tensor] = ByteLRU(uncond_cache_bytes)
        self.uncond_hits = 0
        self.uncond_misses = 0

    def encode(
        self, prompts: Sequence[str], tables: Sequence[dict], adapter_sets: Sequence[AdapterSet]
    ) -> torch.Tensor:
        """One text-encoder call for every row; each row has its own TI table and text-side adapters."""
        if not prompts:
            return torch.zeros(0)
        embeds = build_inputs_embeds_batch(
            prompts, tables, self.tokenizer, self.info.token_embedding, self.info.spec.max_length
        )
        packed = pack_banks(
            adapter_sets,
            self.info.spec,
            self.info.lora_rank,
            self.info.vpt_tokens,
            cache=self.row_cache,
            components=("text_encoder",),
            fixed_rank=self.info.lora_rank_fixed,
        )
        return self.runtime.encode_text(embeds, packed.adapter_slot, packed.text_encoder)

    def encode_with_uncond(
        self,
        prompts: Sequence[str],
        negatives: Sequence[str | None],
        tables: Sequence[dict],
        adapter_sets: Sequence[AdapterSet],
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Cond embeddings for every row, uncond for rows whose negative is not None.

        Unconditional embeddings come from the cache when (negative prompt, text-side adapter set) was
        seen before; the misses ride in the same text-encoder call as the prompts.
        """
        pairs = zip(negatives, adapter_sets, strict=True)
        keys = [(n, adapter_set_key(a)) if n is not None else None for n, a in pairs]
        distinct = [k for k in dict.fromkeys(keys) if k is not None]
        cached = {k: v for k in distinct if (v := self.uncond_cache.get(k)) is not None}
        missing = [k for k in distinct if k not in cached]
        first_row = {k: keys.index(k) for k in missing}
        rows_p = list(prompts) + [k[0] for k in missing]
        rows_t = list(tables) + [tables[first_row[k]] for k in missing]
        rows_a = list(adapter_sets) + [adapter_sets[first_row[k]] for k in missing]
        hidden = self.encode(rows_p, rows_t, rows_a)
        for i, key in enumerate(missing):
            # A copy, so the cache does not keep the whole batch's tensor alive through a view.
            value = cached[key] = hidden[len(prompts) + i].clone()
            self.uncond_cache.put(key, value, tensor_bytes([value]))
        self.uncond_misses += len(missing)
        self.uncond_hits += sum(1 for k in keys if k is not None) - len(missing)
        return hidden[: len(prompts)], [cached[k] if k is not None else None for k in keys]
