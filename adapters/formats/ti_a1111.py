"""Textual inversion as AUTOMATIC1111 saves it.

`.pt`: a pickled dict `{"string_to_param": {"*": [n, D]}, "name": ..., ...}`, read only through
`torch.load(weights_only=True)`; `.safetensors`: `{"emb_params": [n, D]}`. Neither names a usable token
reliably, so the token is the caller's `token`, else the file's `name`, else `default_token` (the file name,
given by `load_adapter_file`), else an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps
from adapters.formats.safetensors_io import finite_float32
from adapters.formats.ti_diffusers import as_vectors, read_diffusers_ti
from adapters.formats.torch_pickle import read_torch_pickle
from adapters.types import TextualInversion

EMB_PARAMS = "emb_params"


def read_a1111_safetensors(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    token: str | None = None,
    default_token: str | None = None,
) -> TextualInversion:
    name = token_name(token, metadata.get("name"), default_token)
    return TextualInversion({name: as_vectors(name, tensors[EMB_PARAMS])})


def read_pt_ti(
    data: bytes, caps: ReadCaps, token: str | None = None, default_token: str | None = None
) -> TextualInversion:
    """A `.pt` embedding: A1111's `string_to_param` dict, diffusers' older `{token: tensor}`, or a bare tensor."""
    obj = read_torch_pickle(data, caps)
    if isinstance(obj, torch.Tensor):
        name = token_name(token, None, default_token)
        return TextualInversion({name: as_vectors(name, _tensor(name, obj))})
    if not isinstance(obj, dict):
        raise AdapterError(f".pt embedding holds a {type(obj).__name__}, not a dict")
    if "string_to_param" in obj:
        params = obj["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise AdapterError("A1111 embedding: string_to_param must hold exactly one tensor")
        vectors = _tensor("string_to_param", next(iter(params.values())))
        name = token_name(token, obj.get("name") if isinstance(obj.get("name"), str) else None, default_token)
        return TextualInversion({name: as_vectors(name, vectors)})
    if len(obj) > caps.max_tensors:
        raise AdapterError(f".pt embedding holds {len(obj)} entries; the limit is {caps.max_tensors}")
    return read_diffusers_ti({str(k): _tensor(str(k), v) for k, v in obj.items()}, token)


def _tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise AdapterError(f".pt embedding entry {name!r} is not a floating-point tensor")
    return finite_float32(name, value.detach())


def token_name(token: str | None, stored: str | None, default: str | None = None) -> str:
    """The caller's token, else the one the file stores, else `default` (the file name), else an error."""
    if name := token or stored or default:
        return name
    raise AdapterError("this embedding file does not name its token: give one (e.g. token='<my-style>')")
