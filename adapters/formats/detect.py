"""Tell what an uploaded adapter file is (LoRA / textual inversion / VPT) and parse it to canonical form."""

from __future__ import annotations

from pathlib import Path

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps
from adapters.formats.lora_diffusers import read_diffusers_lora
from adapters.formats.lora_kohya import is_kohya, read_kohya_lora
from adapters.formats.lora_variants import has_variant_keys
from adapters.formats.safetensors_io import Header, looks_like_safetensors, read_header, read_safetensors
from adapters.formats.ti_a1111 import EMB_PARAMS, read_a1111_safetensors, read_pt_ti
from adapters.formats.ti_diffusers import read_diffusers_ti
from adapters.formats.ti_sdxl import is_sdxl_ti, read_sdxl_ti
from adapters.formats.torch_pickle import looks_like_torch_pickle
from adapters.formats.vpt import is_vpt, read_vpt
from adapters.types import Adapter, AdapterKind

LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up", "lora_linear_layer", ".alpha")
MAX_TI_TOKENS = 64  # a {token: vectors} file with more entries is not an embedding


def detect_kind(header: Header) -> AdapterKind:
    """From tensor names, shapes and metadata only: nothing is loaded."""
    keys = list(header.tensors)
    if is_vpt(keys, header.metadata):
        return "vpt"
    # the LoRA reader names stray keys; a LoHa / LoKr / DoRA file in peft's layout has no LoRA marker, and
    # read as an embedding it was refused as one "trained for another model"
    if is_kohya(keys) or has_variant_keys(keys) or any(m in k for k in keys for m in LORA_MARKERS):
        return "lora"
    if EMB_PARAMS in keys or (
        0 < len(keys) <= MAX_TI_TOKENS and all(len(t.shape) in (1, 2) for t in header.tensors.values())
    ):
        return "textual_inversion"
    raise AdapterError(
        "could not tell what kind of adapter this is: expected LoRA (peft / diffusers / kohya keys), "
        f"a textual-inversion embedding or a diffplex VPT file; it holds {', '.join(keys[:5]) or 'no tensors'}"
    )


def load_adapter(
    data: bytes, *, token: str | None = None, caps: ReadCaps = ReadCaps(), default_token: str | None = None
) -> Adapter:
    """Parse an untrusted adapter file (safetensors, or a `.pt` textual-inversion embedding).

    `token` names a textual-inversion embedding (overriding the file's own name); `default_token` names one whose
    file names none (an SDXL `clip_l` / `clip_g` file, a bare tensor): `load_adapter_file` gives the file name.
    """
    # A safetensors file starts with its header's length, whose first byte is 0x80 (a pickle's first byte) for
    # one header length in 256: the `{` after those 8 bytes is what tells it from a pickle or a zip.
    if looks_like_torch_pickle(data) and not looks_like_safetensors(data):
        return read_pt_ti(data, caps, token, default_token)
    if not looks_like_safetensors(data):
        raise AdapterError("not a safetensors file (nor a .pt embedding); upload a .safetensors adapter")
    kind = detect_kind(read_header(data, caps))
    tensors, metadata = read_safetensors(data, caps)
    if kind == "vpt":
        return read_vpt(tensors, metadata)
    if kind == "lora":
        return read_kohya_lora(tensors) if is_kohya(list(tensors)) else read_diffusers_lora(tensors, metadata)
    if EMB_PARAMS in tensors:
        return read_a1111_safetensors(tensors, metadata, token, default_token)
    if is_sdxl_ti(tensors):
        return read_sdxl_ti(tensors, token, default_token)
    return read_diffusers_ti(tensors, token)


def load_adapter_file(path: str | Path, *, token: str | None = None, caps: ReadCaps = ReadCaps()) -> Adapter:
    """`load_adapter` on a file; an embedding whose file names no token is called by the file's name (`x.pt`: x),
    as A1111 and ComfyUI call it."""
    path = Path(path)
    if (size := path.stat().st_size) > caps.max_bytes:
        raise AdapterError(f"{path.name} is {size} bytes; the limit is {caps.max_bytes}")
    return load_adapter(path.read_bytes(), token=token, caps=caps, default_token=path.stem)
