"""Text side: batched prompt encoding with per-row TI splicing and text-encoder LoRA banks, and the cache of
unconditional embeddings per (negative prompt, text-side adapter set).

SDXL runs two encoders per row: the first on `prompt` with the embeddings' first vectors (`clip_l`), the second on
`prompt_2` (default: `prompt`) with their second (`clip_g`); the context is both penultimate layers side by side
and the pooled embedding comes from the second, as diffusers' `StableDiffusionXLPipeline.encode_prompt` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import CLIPTokenizer

from adapters.byte_lru import ByteLRU, tensor_bytes
from adapters.packing import PackedRowCache, adapter_set_key, pack_banks
from adapters.textual_inversion import build_inputs_embeds_and_eos, build_inputs_embeds_batch
from adapters.types import AdapterSet
from service.engine.request import GenerationRequest
from service.runtime.base import Runtime, XLInfo


@dataclass(frozen=True)
class TextConditioning:
    """What the U-Net reads of rows' text: `hidden` [N, L, D] (the context) and, for SDXL, `pooled` [N, P]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def rows(self, start: int, stop: int) -> TextConditioning:
        """Rows start..stop-1, as views of this batch's tensors."""
        pooled = None if self.pooled is None else self.pooled[start:stop]
        return TextConditioning(self.hidden[start:stop], pooled)

    def copy(self) -> TextConditioning:
        """Its own tensors: a cached row must not keep the whole batch's tensors alive through a view."""
        return TextConditioning(self.hidden.clone(), None if self.pooled is None else self.pooled.clone())

    @property
    def nbytes(self) -> int:
        return tensor_bytes([t for t in (self.hidden, self.pooled) if t is not None])

    @staticmethod
    def cat(rows: Sequence[TextConditioning]) -> TextConditioning:
        pooled = [r.pooled for r in rows]
        both = all(p is not None for p in pooled)
        return TextConditioning(torch.cat([r.hidden for r in rows]), torch.cat(pooled) if both else None)


def negative_texts(request: GenerationRequest, xl: XLInfo | None) -> tuple[str, str] | None:
    """The (negative prompt, second negative prompt) a guided request's uncond rows encode, or None where they are
    zeros: SDXL with `force_zeros_for_empty_prompt` and no negative prompt, as diffusers' pipeline decides (it
    looks at the first negative prompt only). The second defaults to the first."""
    if xl is not None and request.negative_prompt is None and xl.force_zeros_for_empty_prompt:
        return None
    negative = request.negative_prompt or ""
    return negative, (request.negative_prompt_2 or negative) if xl is not None else ""


class PromptEncoder:
    def __init__(self, runtime: Runtime, row_cache: PackedRowCache, uncond_cache_bytes: int) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self.xl = self.info.xl
        self.tokenizer = CLIPTokenizer.from_pretrained(self.info.tokenizer_dir)
        self.tokenizer_2 = CLIPTokenizer.from_pretrained(self.xl.tokenizer_dir) if self.xl is not None else None
        self.row_cache = row_cache
        # Bytes, not entries: one entry is [77, D] floats, 39 KiB here but 231 KiB for SD-1.5's D = 768.
        self.uncond_cache: ByteLRU[tuple[str, ...], TextConditioning] = ByteLRU(uncond_cache_bytes)
        self.uncond_hits = 0
        self.uncond_misses = 0

    def encode(
        self,
        prompts: Sequence[str],
        tables: Sequence[dict],
        adapter_sets: Sequence[AdapterSet],
        prompts_2: Sequence[str] | None = None,
        tables_2: Sequence[dict] | None = None,
    ) -> TextConditioning:
        """One call per text encoder for every row; each row has its own TI tables and text-side adapters.
        SDXL: `prompts_2` / `tables_2` feed the second encoder (default: `prompts`, no embeddings)."""
        if not prompts:
            return TextConditioning(torch.zeros(0))
        length = self.info.spec.max_length
        embeds = build_inputs_embeds_batch(prompts, tables, self.tokenizer, self.info.token_embedding, length)
        components = ("text_encoder",) if self.xl is None else ("text_encoder", "text_encoder_2")
        packed = pack_banks(
            adapter_sets,
            self.info.spec,
            self.info.lora_rank,
            self.info.vpt_tokens,
            cache=self.row_cache,
            components=components,
            fixed_rank=self.info.lora_rank_fixed,
        )
        hidden = self.runtime.encode_text(embeds, packed.adapter_slot, packed.text_encoder)
        if self.xl is None:
            return TextConditioning(hidden)
        prompts_2 = list(prompts) if prompts_2 is None else prompts_2
        tables_2 = [{}] * len(prompts) if tables_2 is None else tables_2
        embeds_2, eos = build_inputs_embeds_and_eos(
            prompts_2, tables_2, self.tokenizer_2, self.xl.token_embedding, length
        )
        hidden_2, pooled = self.runtime.encode_text_2(embeds_2, eos, packed.adapter_slot, packed.text_encoder_2)
        return TextConditioning(torch.cat([hidden, hidden_2], dim=-1), pooled)

    def encode_requests(
        self, requests: Sequence[GenerationRequest]
    ) -> tuple[TextConditioning, list[TextConditioning | None]]:
        """Cond conditioning for every request, uncond for the guided ones (None for the others).

        Unconditional embeddings come from the cache when (negative prompts, text-side adapter set) was seen
        before; the misses ride in the same text-encoder calls as the prompts. SDXL's zero negatives cost no call.
        """
        adapter_sets = [r.text_adapters() for r in requests]
        negatives = [negative_texts(r, self.xl) if r.guided else None for r in requests]
        keys = [
            (*n, adapter_set_key(a)) if n is not None else None for n, a in zip(negatives, adapter_sets, strict=True)
        ]
        distinct = [k for k in dict.fromkeys(keys) if k is not None]
        cached = {k: v for k in distinct if (v := self.uncond_cache.get(k)) is not None}
        missing = [k for k in distinct if k not in cached]
        first = {k: requests[keys.index(k)] for k in missing}
        tables = [r.ti_table() for r in requests] + [first[k].ti_table() for k in missing]
        tables_2 = None
        if self.xl is not None:
            tables_2 = [r.ti_table_2() for r in requests] + [first[k].ti_table_2() for k in missing]
        conditioning = self.encode(
            [r.prompt for r in requests] + [k[0] for k in missing],
            tables,
            adapter_sets + [first[k].text_adapters() for k in missing],
            [r.prompt_2 or r.prompt for r in requests] + [k[1] for k in missing],
            tables_2,
        )
        for i, key in enumerate(missing):
            value = cached[key] = conditioning.rows(len(requests) + i, len(requests) + i + 1).copy()
            self.uncond_cache.put(key, value, value.nbytes)
        self.uncond_misses += len(missing)
        self.uncond_hits += sum(1 for k in keys if k is not None) - len(missing)
        cond = conditioning.rows(0, len(requests))
        zeros = (
            self._zeros(cond) if any(r.guided and n is None for r, n in zip(requests, negatives, strict=True)) else None
        )
        uncond = [
            cached[k] if k is not None else (zeros if r.guided else None) for r, k in zip(requests, keys, strict=True)
        ]
        return cond, uncond

    def _zeros(self, cond: TextConditioning) -> TextConditioning:
        """SDXL's negative conditioning without a negative prompt (`force_zeros_for_empty_prompt`)."""
        pooled = None if cond.pooled is None else torch.zeros_like(cond.pooled[:1])
        return TextConditioning(torch.zeros_like(cond.hidden[:1]), pooled)
