"""SDXL textual inversion as model sites publish it: a safetensors file `{"clip_l": [n, D1], "clip_g": [n, D2]}`,
one embedding with n vectors for each of SDXL's text encoders (`clip_l` the first, `clip_g` the second, wider one).

The file names no token: it is the caller's `token`, else the file's name (as A1111 and ComfyUI call an
embedding), else an error. diffusers loads one the same way, twice: `load_textual_inversion(sd["clip_l"],
token=..., text_encoder=pipe.text_encoder, ...)` and again with `sd["clip_g"]` and the second encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from adapters.errors import AdapterError
from adapters.formats.ti_a1111 import token_name
from adapters.formats.ti_diffusers import as_vectors
from adapters.types import TextualInversion

CLIP_L, CLIP_G = "clip_l", "clip_g"


def is_sdxl_ti(keys: Iterable[str]) -> bool:
    return set(keys) == {CLIP_L, CLIP_G}


def read_sdxl_ti(
    tensors: Mapping[str, torch.Tensor], token: str | None = None, default_token: str | None = None
) -> TextualInversion:
    name = token_name(token, None, default_token)
    first, second = as_vectors(name, tensors[CLIP_L]), as_vectors(name, tensors[CLIP_G])
    if first.shape[0] != second.shape[0]:  # each prompt position takes one vector in each encoder
        raise AdapterError(
            f"SDXL embedding has {first.shape[0]} clip_l vectors but {second.shape[0]} clip_g vectors: "
            "it needs the same number for both text encoders"
        )
    return TextualInversion({name: first}, {name: second})
