"""diffplex's VPT file: a safetensors file, documented in adapters/README.md ("VPT file format").

Tensors `vpt.{j}` [P, d_j], one per U-Net transformer block j (shallow: `vpt.0` only, deep: every block),
and string metadata: kind=vpt, format_version, depth (shallow|deep), tokens (P), backbone_fingerprint.

Version 2 tokens live in attn1's input space, after the block's norm1; version 1 tokens lived before it
(`adapters.vpt`). A version-1 file is refused with the command that converts it
(`diffplex adapters convert-vpt`), which needs the backbone's norm1 weights and so cannot run at upload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors_bytes

from adapters.errors import AdapterError, listing
from adapters.types import VPTAdapter

VPT_FORMAT_VERSION = "2"
PRE_NORM_FORMAT_VERSION = "1"  # tokens before the block's norm1: read only to convert them
VPT_KEY = re.compile(r"vpt\.(\d+)")


def is_vpt(keys: list[str], metadata: Mapping[str, str]) -> bool:
    return metadata.get("kind") == "vpt" or (bool(keys) and all(VPT_KEY.fullmatch(k) for k in keys))


def vpt_to_bytes(adapter: VPTAdapter) -> bytes:
    tensors = {f"vpt.{j}": t.detach().to("cpu", torch.float32).contiguous() for j, t in enumerate(adapter.tokens)}
    metadata = {
        "kind": "vpt",
        "format_version": VPT_FORMAT_VERSION,
        "depth": adapter.depth,
        "tokens": str(adapter.num_tokens),
        "backbone_fingerprint": adapter.backbone_fingerprint,
    }
    return save_safetensors_bytes(tensors, metadata=metadata)


def write_vpt(adapter: VPTAdapter, path: str | Path) -> None:
    Path(path).write_bytes(vpt_to_bytes(adapter))


def read_vpt(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], version: str = VPT_FORMAT_VERSION
) -> VPTAdapter:
    """Parse a VPT file of format `version` (the current one unless converting an older file)."""
    old = metadata.get("kind") == "vpt" and metadata.get("format_version") == PRE_NORM_FORMAT_VERSION
    if old and version != PRE_NORM_FORMAT_VERSION:
        raise AdapterError(
            "this VPT file is format_version 1 (prompt tokens before each block's norm1), which diffplex no "
            "longer serves; convert it once with: diffplex adapters convert-vpt --file IN --out OUT "
            "[--model BACKBONE_DIR]"
        )
    if metadata.get("kind") != "vpt" or metadata.get("format_version") != version:
        raise AdapterError(
            f"VPT file metadata must say kind=vpt and format_version={version}, got "
            f"kind={metadata.get('kind')!r} format_version={metadata.get('format_version')!r}"
        )
    depth = metadata.get("depth")
    if depth not in ("shallow", "deep"):
        raise AdapterError(f"VPT depth must be 'shallow' or 'deep', got {depth!r}")
    fingerprint = metadata.get("backbone_fingerprint", "")
    if not fingerprint:
        raise AdapterError("VPT file does not name the backbone it was trained on (backbone_fingerprint)")
    if bad := [k for k in tensors if not VPT_KEY.fullmatch(k)]:
        raise AdapterError(f"VPT file holds tensors other than vpt.{{j}}: {listing(sorted(bad))}")
    blocks = sorted(int(VPT_KEY.fullmatch(k).group(1)) for k in tensors)  # type: ignore[union-attr]
    if blocks != list(range(len(blocks))) or not blocks:
        raise AdapterError(f"VPT tensors must be vpt.0 .. vpt.{{J-1}} without gaps, got blocks {blocks[:8]}")
    if depth == "shallow" and blocks != [0]:
        raise AdapterError(f"a shallow VPT holds only vpt.0, this file holds {len(blocks)} blocks")
    tokens = [tensors[f"vpt.{j}"] for j in blocks]
    declared = metadata.get("tokens", "")
    if any(t.ndim != 2 for t in tokens) or {str(t.shape[0]) for t in tokens} != {declared}:
        shapes = [tuple(t.shape) for t in tokens][:4]
        raise AdapterError(f"VPT tensors must all be [P, d_j] with P = tokens = {declared!r}; got shapes {shapes}")
    return VPTAdapter(depth, tuple(tokens), fingerprint)  # type: ignore[arg-type]
