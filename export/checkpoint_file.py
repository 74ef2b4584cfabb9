"""A single-file checkpoint's tensor names and shapes, read without loading its weights where the format allows.

`.safetensors`: the JSON header (the first 8 bytes say its length), nothing else. `.ckpt`: a pickle, so it is
opened only with `torch.load(weights_only=True)` (tensors, containers and numbers; any other object is refused
before it is built, so nothing in the file runs), memory-mapped when it is a zip archive, and only up to
MAX_CKPT_BYTES, because a legacy pickle is read whole into memory.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError

SAFETENSORS = ".safetensors"
CKPT = ".ckpt"
SINGLE_FILE_SUFFIXES = (SAFETENSORS, CKPT)
GiB = 1 << 30
MAX_HEADER_BYTES = 100 * (1 << 20)  # safetensors' own limit on its JSON header
# SD-1.5's full training checkpoint (EMA and non-EMA weights) is 7.7 GB; a pickle larger than that is no SD-1/2
# checkpoint diffplex serves, and converting it to .safetensors lifts the cap (those are never read whole).
MAX_CKPT_BYTES = 8 * GiB


@dataclass(frozen=True)
class CheckpointKeys:
    """What family detection reads: every tensor's name and shape, and the training step a .ckpt records."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    global_step: int | None = None

    def has(self, key: str) -> bool:
        return key in self.shapes

    def with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.shapes if k.startswith(prefix)]


def is_single_file(path: Path) -> bool:
    """Whether `path` names a single-file checkpoint (by its suffix: it need not exist yet)."""
    return Path(path).suffix.lower() in SINGLE_FILE_SUFFIXES


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise ExportError(f"{path} is not a single-file checkpoint: expected a .safetensors or .ckpt file")
    if not path.is_file():
        raise ExportError(f"{path} does not exist or is not a file")
    return suffix


def read_safetensors_header(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The raw JSON header and its parsed form, checked to be a safetensors header."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ExportError(f"{path} is not a safetensors file: it is {size} bytes long")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ExportError(f"{path} is not a safetensors file: its header length ({length} bytes) is impossible")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path} is not a safetensors file: its header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise ExportError(f"{path} is not a safetensors file: its header is not a JSON object")
    return raw, header


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    _, header = read_safetensors_header(path)
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ExportError(f"{path} is not a safetensors file: tensor {name!r} has no valid shape")
        shapes[name] = tuple(shape)
    return shapes


def load_ckpt(path: Path, max_bytes: int = MAX_CKPT_BYTES) -> tuple[dict[str, Any], int | None]:
    """The state dict of a .ckpt (unwrapped from Lightning's {"state_dict": ...}) and its `global_step`, read with
    torch.load(weights_only=True). Refuses a file over `max_bytes` and one holding other objects than tensors."""
    import torch

    size = path.stat().st_size
    if size > max_bytes:
        raise ExportError(
            f"{path} is {size / GiB:.1f} GiB: a pickled .ckpt is read whole into memory and one over "
            f"{max_bytes / GiB:.0f} GiB is refused; convert it to .safetensors first"
        )
    try:
        # mmap: a zip-format checkpoint's tensors stay on disk until used (legacy pickles cannot be mapped).
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph of advice to load with weights_only=False: keep the line saying what was
        # refused ("... unsupported GLOBAL posix.system ...", or "Unsupported operand" for no pickle at all).
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        reason = (lines[0] if lines else type(e).__name__)[:300]
        if "GLOBAL" not in reason:
            raise ExportError(f"cannot read {path} as a PyTorch checkpoint: {reason}") from e
        raise ExportError(
            f"refused {path}: it holds pickled Python objects other than tensors ({reason}); such a file could run "
            "code when loaded, so it is never unpickled here. Use a .safetensors version of the model"
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ExportError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
    global_step = None
    while isinstance(obj, dict) and "state_dict" in obj:  # Lightning nests the weights, as diffusers unwraps them
        step = obj.get("global_step")
        global_step = step if isinstance(step, int) else global_step
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ExportError(f"{path} holds a {type(obj).__name__}, not a state dict of named tensors")
    return obj, global_step


def read_checkpoint_keys(path: Path, max_ckpt_bytes: int = MAX_CKPT_BYTES) -> CheckpointKeys:
    """Names and shapes of a .safetensors or .ckpt checkpoint's tensors (ExportError if it is neither)."""
    path = Path(path)
    if _suffix(path) == SAFETENSORS:
        return CheckpointKeys(path, _safetensors_shapes(path))
    import torch

    state, global_step = load_ckpt(path, max_ckpt_bytes)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return CheckpointKeys(path, shapes, global_step)


def header_digest(path: Path) -> str:
    """sha256 of what identifies a checkpoint's contents without reading its gigabytes: a safetensors header (every
    name, dtype, shape and offset); for a .ckpt its first and last MiB (a zip's directory, with each record's
    CRC-32, is at its end)."""
    path = Path(path)
    if _suffix(path) == SAFETENSORS:
        return hashlib.sha256(read_safetensors_header(path)[0]).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(f.read(1 << 20))
    return digest.hexdigest()
