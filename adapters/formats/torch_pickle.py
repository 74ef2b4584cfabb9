"""Reading a `.pt` file without unpickling anything but tensors and plain containers.

Only `torch.load(weights_only=True)` touches the bytes, behind checks made first: its restricted unpickler
refuses every global outside tensors and builtin containers, so a payload's `__reduce__` never runs.
Before it runs, the zip container is checked with `zipfile` (members stored uncompressed, as `torch.save`
writes them, and their total within the cap), because torch inflates a compressed member whole: a few
hundred kB of deflated zeros would become gigabytes. Legacy (pre-torch-1.6) `.pt` files are refused:
torch's legacy reader allocates whatever storage size the pickle declares before reading any data.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import torch

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default zip container
PICKLE_PROTO = b"\x80"  # a legacy (non-zip) pickle starts with the PROTO opcode
ZIP_OVERHEAD_MEMBERS = 16  # data.pkl, version, byteorder... besides one member per tensor storage


def looks_like_torch_pickle(data: bytes) -> bool:
    return data.startswith(ZIP_MAGIC) or data.startswith(PICKLE_PROTO)


def check_torch_zip(data: bytes, caps: ReadCaps) -> None:
    """Raise AdapterError unless `data` is a complete zip of stored members no larger than the caps."""
    if not data.startswith(ZIP_MAGIC):
        raise AdapterError(
            "legacy (pre-torch-1.6) .pt files are refused: only tensors and plain containers in a torch.save "
            "zip file are accepted; re-save it with a current torch.save or convert it to .safetensors"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise AdapterError(f".pt file is not a complete zip archive ({e}): truncated upload?") from e
    if len(members) > caps.max_tensors + ZIP_OVERHEAD_MEMBERS:
        raise AdapterError(f".pt file holds {len(members)} members; the limit is {caps.max_tensors}")
    if compressed := [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]:
        raise AdapterError(
            f".pt member {compressed[0]!r} is compressed; torch.save never compresses, and compressed members "
            "are refused (they can inflate to gigabytes): re-save it with torch.save or convert to .safetensors"
        )
    if (total := sum(m.file_size for m in members)) > caps.max_pickle_bytes:
        raise AdapterError(
            f".pt members hold {total} bytes; the limit for pickled files is {caps.max_pickle_bytes}: "
            "convert it to .safetensors"
        )


def read_torch_pickle(data: bytes, caps: ReadCaps) -> Any:
    if len(data) > caps.max_pickle_bytes:
        raise AdapterError(
            f".pt file is {len(data)} bytes; the limit for pickled files is {caps.max_pickle_bytes}: "
            "convert it to .safetensors"
        )
    check_torch_zip(data, caps)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises many types; nothing was executed
        raise AdapterError(
            f".pt file could not be read as plain tensors ({type(e).__name__}); "
            "only tensors and plain containers are accepted: convert it to .safetensors"
        ) from e
