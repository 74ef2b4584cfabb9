"""From an accepted body to engine requests: limits, prompt tags, the tenant's adapters, seeds.

Everything that can be wrong with a request is found here, before anything is queued, so a user gets one
clear 4xx instead of a job that fails later.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np

from adapters import Adapter, TextualInversion
from adapters.errors import DiffplexError
from service.core.settings import Settings
from service.engine import GenerationRequest
from service.engine.request import max_side, side_supported
from service.engine.step_cache import request_feature_bytes
from service.generation.images import ImageInputError, parse_size
from service.generation.params import MAX_SEED, ImageParams
from service.generation.prompt import PromptError, Tag, embeddings_used, extract_tags
from service.generation.warnings import request_warnings, trained_words, zeroed_negative_warning
from service.hotload.cache import AdapterCache
from service.runtime.base import BackboneInfo
from service.stores.base import AdapterMeta, Store


class InvalidRequest(DiffplexError, ValueError):
    """A request over a limit or naming something that does not exist; `param` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str = "invalid_value"):
        super().__init__(message, param=param, status=status, code=code)


@dataclass
class Plan:
    requests: list[GenerationRequest]
    revised_prompt: str | None  # the prompt as the model saw it, when tags were removed
    response_format: str
    warnings: list[str] = dataclass_field(default_factory=list)  # what the model will honour only in part (warnings.py)


def check_limits(params: ImageParams, settings: Settings) -> None:
    limits = settings.limits
    if params.model not in (None, "", settings.model_name):
        raise InvalidRequest(
            f"model {params.model!r} does not exist here; this server runs {settings.model_name!r} (GET /v1/models)",
            param="model",
            status=404,
            code="model_not_found",
        )
    if params.n > limits.max_n:
        raise InvalidRequest(f"n is {params.n}; at most {limits.max_n} images per request", param="n")
    if params.steps > limits.max_steps:
        raise InvalidRequest(f"steps is {params.steps}; the limit is {limits.max_steps}", param="steps")
    for field in ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2"):
        if (text := getattr(params, field)) is not None and len(text) > limits.max_prompt_chars:
            raise InvalidRequest(
                f"{field} has {len(text)} characters; the limit is {limits.max_prompt_chars}", param=field
            )
    if params.seed is not None and params.seed + params.n - 1 > MAX_SEED:
        raise InvalidRequest(f"seed + n - 1 must not exceed {MAX_SEED}", param="seed")
    for field in ("user", "quality", "style"):
        if (text := getattr(params, field)) is not None and len(text) > limits.max_field_chars:
            raise InvalidRequest(
                f"{field} has {len(text)} characters; the limit is {limits.max_field_chars}", param=field
            )
    check_adapter_count(len(params.adapters), limits.max_adapters_per_request)


def check_adapter_count(count: int, max_per_request: int) -> None:
    """Before any per-adapter work: a list far over the limit costs nothing more than one that is just over."""
    if count > max_per_request:
        raise InvalidRequest(
            f"the request names {count} adapters (in `adapters` and <lora:...> tags); the limit is {max_per_request}",
            param="adapters",
        )


def resolve_adapters(
    params: ImageParams,
    prompt: str,
    tags: list[Tag],
    tenant: str,
    store: Store,
    cache: AdapterCache,
    max_per_request: int,
    epoch: str | None = None,
) -> tuple[tuple[Adapter, float], ...]:
    """Named adapters (body + tags) and the embeddings whose tokens the prompts use, all from the tenant's
    own namespace: another tenant's adapter is "not found", exactly like a missing one, and so is one that a
    later incarnation of the tenant's name wrote (`epoch`: the request's)."""
    # (name, weight, the kind a tag asks for; None for the `adapters` field, which takes LoRAs and VPTs alike)
    wanted: list[tuple[str, float, str | None]] = [(a.name, a.weight, None) for a in params.adapters]
    wanted += [(t.name, t.weight, t.kind) for t in tags]
    check_adapter_count(len(wanted), max_per_request)
    names = [n for n, _, _ in wanted]
    if duplicates := sorted(n for n, k in Counter(names).items() if k > 1):
        raise InvalidRequest(
            f"adapter(s) {', '.join(duplicates)} named more than once (in `adapters` or <lora:...> tags): "
            "give each one once, with its weight",
            param="adapters",
        )
    metas = {m.name: m for m in store.list_adapters(tenant, epoch)}
    for name, _, tag_kind in wanted:
        if name not in metas:
            raise InvalidRequest(
                f"adapter {name!r} not found in your namespace: upload it with PUT /v1/adapters/{name} "
                "(GET /v1/adapters lists yours)",
                param="adapters",
                status=404,
                code="adapter_not_found",
            )
        check_named_kind(metas[name], tag_kind)
    chosen = [(metas[n], w) for n, w, _ in wanted]
    for meta in embeddings_used(texts(params, prompt), metas.values()):
        chosen.append((meta, 1.0))
    if len(chosen) > max_per_request:
        raise InvalidRequest(
            f"the request uses {len(chosen)} adapters; the limit is {max_per_request}", param="adapters"
        )
    return tuple((cache.get(tenant, meta), weight) for meta, weight in chosen)


def texts(params: ImageParams, prompt: str) -> list[str]:
    """The request's texts the model reads (`prompt` with its tags removed), where embeddings' tokens may stand."""
    others = (params.negative_prompt, params.prompt_2, params.negative_prompt_2)
    return [prompt, *(text for text in others if text is not None)]


def check_named_kind(meta: AdapterMeta, tag_kind: str | None) -> None:
    """An adapter named where it cannot act is refused, never applied as another kind or silently dropped: an
    embedding acts through its tokens in the prompt, and a tag must say the adapter's kind."""
    if meta.kind == "textual_inversion":
        tokens = " ".join(meta.tokens[:4]) or "its token"
        raise InvalidRequest(
            f"{meta.name!r} is a textual-inversion embedding: it is used by writing its token ({tokens}) in the "
            "prompt or negative prompt, not by naming it in `adapters` or a <lora:...> tag",
            param="adapters",
        )
    if tag_kind is not None and tag_kind != meta.kind:
        kind = "a LoRA" if meta.kind == "lora" else "a VPT adapter"
        tag = "lora" if meta.kind == "lora" else "vpt"
        raise InvalidRequest(
            f"{meta.name!r} is {kind}: write <{tag}:{meta.name}> (or name it in `adapters`), not <{tag_kind}:...>",
            param="prompt",
        )


def plan(
    params: ImageParams,
    tenant: str,
    store: Store,
    cache: AdapterCache,
    settings: Settings,
    info: BackboneInfo,
    init_image: np.ndarray | None = None,
    strength: float = 0.8,
    request_id: str = "",
    epoch: str | None = None,
) -> Plan:
    """Blocking (store reads, adapter parsing): call it from a worker thread."""
    size_multiple = info.size_multiple
    check_limits(params, settings)
    try:
        prompt, tags = extract_tags(params.prompt)
        width, height = parse_size(params.size)
    except (PromptError, ImageInputError) as error:
        raise InvalidRequest(str(error), param="prompt" if isinstance(error, PromptError) else "size") from None
    max_adapters = settings.limits.max_adapters_per_request
    adapters = resolve_adapters(params, prompt, tags, tenant, store, cache, max_adapters, epoch)
    if init_image is not None and width is None:
        height, width = int(init_image.shape[0]), int(init_image.shape[1])  # edits default to the image's size
        if not all(side_supported(d, info.image_size, size_multiple) for d in (width, height)):
            raise InvalidRequest(
                f"the image is {width}x{height}; this model needs sides that are multiples of {size_multiple} "
                f"up to {max_side(info.image_size)} (native {info.image_size}x{info.image_size}): resize or crop it",
                param="image",
            )
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
    requests = [
        GenerationRequest(
            prompt=prompt,
            seed=seed + i,
            negative_prompt=params.negative_prompt,
            prompt_2=params.prompt_2,
            negative_prompt_2=params.negative_prompt_2,
            original_size=params.original_size,
            crops_coords_top_left=params.crops_coords_top_left or (0, 0),
            target_size=params.target_size,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            sampler=params.sampler,
            eta=params.eta,
            width=width,
            height=height,
            variation_seed=params.variation_seed,
            variation_strength=params.variation_strength,
            guidance_interval=params.guidance_interval,
            uncond_refresh=params.uncond_refresh,
            cache_interval=params.cache_interval,
            adapters=adapters,
            init_image=init_image,
            strength=strength,
            tenant=tenant,
            request_id=f"{request_id}-{i}" if request_id else f"{tenant}-{secrets.token_hex(6)}-{i}",
        )
        for i in range(params.n)
    ]
    for request in requests:
        # EngineError, or AdapterError for a token two of the tenant's embeddings define -> 400, before anything
        # is queued; the engine trusts a request validated here and does not check it again.
        request.validate(info.image_size, size_multiple, info.xl is not None, info.step_cache_channels > 0)
        request_feature_bytes(request, info, settings.engine.step_cache_bytes)
    defined = [t for adapter, _ in adapters if isinstance(adapter, TextualInversion) for t in adapter.tokens]
    warnings = request_warnings(
        texts(params, prompt),
        defined,
        trained_words(info.tokenizer_dir),
        (width, height),
        info.image_size,
    )
    zeroes = info.xl is not None and info.xl.force_zeros_for_empty_prompt
    warnings += zeroed_negative_warning(params.negative_prompt, params.negative_prompt_2, zeroes)
    return Plan(requests, prompt if prompt != params.prompt else None, params.response_format, warnings)
