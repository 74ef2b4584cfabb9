"""Reading a `.pt` file without unpickling anything but tensors and plain containers.

Only `torch.load(weights_only=True)` touches the bytes, behind a size cap: its restricted unpickler
refuses every global outside tensors and builtin containers, so a payload's `__reduce__` never runs.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default zip container
PICKLE_PROTO = b"\x80"  # a legacy (non-zip) pickle starts with the PROTO opcode


def looks_like_torch_pickle(data: bytes) -> bool:
    return data.startswith(ZIP_MAGIC) or data.startswith(PICKLE_PROTO)


def read_torch_pickle(data: bytes, caps: ReadCaps) -> Any:
    if len(data) > caps.max_pickle_bytes:
        raise AdapterError(
            f".pt file is {len(data)} bytes; the limit for pickled files is {caps.max_pickle_bytes}: "
            "convert it to .safetensors"
        )
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises many types; nothing was executed
        raise AdapterError(
            f".pt file could not be read as plain tensors ({type(e).__name__}); "
            "only tensors and plain containers are accepted: convert it to .safetensors"
        ) from e
