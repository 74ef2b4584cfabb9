"""Reading untrusted safetensors bytes: the header is parsed and checked against caps before any tensor loads.

Layout: an 8-byte little-endian header length N, N bytes of JSON (`{name: {dtype, shape, data_offsets}}`
plus an optional `__metadata__` of strings), then the tensor data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps

FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
INT_DTYPES = {"I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8}  # accepted only for scalars such as kohya `alpha`


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def looks_like_safetensors(data: bytes) -> bool:
    return len(data) >= 10 and data[8:9] == b"{"


def read_header(data: bytes, caps: ReadCaps) -> Header:
    """Parse and check the header: sizes, tensor count, dtypes, shapes and that offsets tile the data exactly."""
    if len(data) > caps.max_bytes:
        raise AdapterError(f"adapter file is {len(data)} bytes; the limit is {caps.max_bytes}")
    if len(data) < 8:
        raise AdapterError("adapter file is truncated: shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > caps.max_header_bytes:
        raise AdapterError(f"safetensors header claims {n} bytes; the limit is {caps.max_header_bytes}")
    if 8 + n > len(data):
        raise AdapterError(f"adapter file is truncated: header claims {n} bytes, the file has {len(data) - 8}")
    try:
        raw = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"safetensors header is not valid JSON: {e}") from e
    except RecursionError:  # "[[[[...": a few hundred kB of brackets exhaust the parser's stack
        raise AdapterError("safetensors header is not valid: its JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise AdapterError("safetensors header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise AdapterError("safetensors __metadata__ must map strings to strings")
    if len(raw) > caps.max_tensors:
        raise AdapterError(f"adapter file holds {len(raw)} tensors; the limit is {caps.max_tensors}")
    tensors = {name: _tensor_info(name, entry) for name, entry in raw.items()}
    _check_offsets(raw, len(data) - 8 - n)
    return Header(tensors, metadata)


def _tensor_info(name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
        raise AdapterError(f"safetensors entry {name!r} is malformed")
    dtype, shape = entry.get("dtype"), entry["shape"]
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise AdapterError(f"tensor {name!r} has an invalid shape {shape}")
    if dtype not in FLOAT_DTYPES and not (dtype in INT_DTYPES and math.prod(shape) == 1):
        raise AdapterError(f"tensor {name!r} has dtype {dtype}; adapters must be F16, BF16, F32 or F64")
    return TensorInfo(dtype, tuple(shape))


def _check_offsets(raw: dict[str, Any], data_len: int) -> None:
    spans = []
    for name, entry in raw.items():
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise AdapterError(f"tensor {name!r} has malformed data_offsets")
        begin, end = offsets
        itemsize = FLOAT_DTYPES.get(entry["dtype"]) or INT_DTYPES[entry["dtype"]]
        if not 0 <= begin <= end <= data_len or end - begin != math.prod(entry["shape"]) * itemsize:
            raise AdapterError(f"tensor {name!r} lies outside the file or disagrees with its shape: truncated file?")
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise AdapterError("safetensors tensors overlap or leave gaps: the file is corrupt")
        position = end
    if position != data_len:
        raise AdapterError("safetensors data is longer or shorter than its tensors: the file is corrupt")


def read_safetensors(data: bytes, caps: ReadCaps) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Checked load: caps and header first, then the tensors (as float32), which must all be finite."""
    header = read_header(data, caps)
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise AdapterError(f"safetensors file could not be read: {e}") from e
    return {name: finite_float32(name, t) for name, t in tensors.items()}, header.metadata


def finite_float32(name: str, tensor: torch.Tensor) -> torch.Tensor:
    out = tensor.to(torch.float32)
    if not torch.isfinite(out).all():
        raise AdapterError(f"tensor {name!r} holds NaN or infinite values (or overflows float32)")
    return out
