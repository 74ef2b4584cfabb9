"""An uploaded adapter file -> its metadata, after parsing and validating it against the running backbone.

Validation happens at upload so a tenant learns at once (4xx with the reason) that a file cannot run here,
rather than at its first generation.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer

from adapters import (
    Adapter,
    AdapterError,
    ExportLimits,
    LoRAAdapter,
    ReadCaps,
    TextualInversion,
    VPTAdapter,
    load_adapter,
    validate,
)
from adapters.spec import BackboneSpec
from adapters.textual_inversion import MAX_TOKEN_CHARS, check_tokens
from service.stores.base import AdapterMeta

KINDS = {
    "lora": "lora",
    "textual_inversion": "textual_inversion",
    "ti": "textual_inversion",
    "embedding": "textual_inversion",
    "vpt": "vpt",
}


def canonical_kind(kind: str | None) -> str | None:
    if kind is None or kind == "":
        return None
    if len(kind) > max(map(len, KINDS)):  # not echoed back: it is not one of them either way
        raise AdapterError(f"kind has {len(kind)} characters; it is one of lora, textual_inversion (ti), vpt")
    try:
        return KINDS[kind.lower()]
    except KeyError:
        raise AdapterError(f"kind {kind!r} is not one of lora, textual_inversion (ti), vpt") from None


def describe(adapter: Adapter) -> dict[str, object]:
    if isinstance(adapter, LoRAAdapter):
        components = sorted({n.split(".", 1)[0] for n in adapter.layers})
        return {
            "layers": len(adapter.layers),
            "rank": max(layer.rank for layer in adapter.layers.values()),
            "components": components,
        }
    if isinstance(adapter, TextualInversion):
        return {"vectors": {t: int(v.shape[0]) for t, v in adapter.tokens.items()}}
    assert isinstance(adapter, VPTAdapter)
    return {"depth": adapter.depth, "tokens": adapter.num_tokens, "blocks": len(adapter.tokens)}


@lru_cache(maxsize=4)
def tokenizer_at(path: Path) -> Any:
    """The backbone's tokenizer (the one the engine's `PromptEncoder` loads), once per process."""
    return CLIPTokenizer.from_pretrained(path)


def inspect_upload(
    data: bytes,
    name: str,
    kind: str | None,
    token: str | None,
    spec: BackboneSpec,
    limits: ExportLimits,
    max_bytes: int,
    tokenizer_dir: Path | None = None,
) -> AdapterMeta:
    """Blocking (parses tensors): call it from a worker thread. Raises AdapterError saying what to fix.

    `tokenizer_dir`: the backbone's tokenizer, which embedding tokens must not collide with (None: not checked,
    for tools that only measure adapters)."""
    expected = canonical_kind(kind)
    if not data:
        raise AdapterError("the uploaded file is empty: send the adapter as the multipart field `file`")
    token = token or None
    if token is not None and len(token) > MAX_TOKEN_CHARS:  # before the file is parsed; not echoed back
        raise AdapterError(f"token has {len(token)} characters; the limit is {MAX_TOKEN_CHARS}: e.g. <my-style>")
    try:
        adapter = load_adapter(data, token=token, caps=ReadCaps(max_bytes=max_bytes))
    except AdapterError as error:
        if token is None and "does not name its token" in str(error):
            raise AdapterError(f"{error}; send the token as the form field `token`") from error
        raise
    if expected is not None and adapter.kind != expected:
        raise AdapterError(f"the file holds a {adapter.kind} adapter, not {expected}: check the file, or drop `kind`")
    validate(adapter, spec, limits)
    if isinstance(adapter, TextualInversion) and tokenizer_dir is not None:
        check_tokens(adapter.tokens, tokenizer_at(Path(tokenizer_dir)))
    tokens = sorted(adapter.tokens) if isinstance(adapter, TextualInversion) else []
    return AdapterMeta(
        name=name,
        kind=adapter.kind,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        tokens=tokens,
        token_override=token,
        detail=describe(adapter),
    )
