"""Named tensors read from a pipeline component's safetensors files, one tensor at a time.

What a backbone built without weights (export/backbone.py `load_backbone_without_weights`) needs of the
checkpoint: a handful of tensors, not the gigabytes around them. `safe_open` reads only the bytes of the
tensors asked for; pickled `.bin` checkpoints are never opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from export.errors import ExportError

# The files diffusers' and transformers' `from_pretrained` load when no variant is asked for, single or sharded.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _variant_name(name: str, variant: str | None) -> str:
    """`model.safetensors` as diffusers names its `variant` (`model.fp16.safetensors`)."""
    stem, _, ext = name.rpartition(".")
    return f"{stem}.{variant}.{ext}" if variant else name


def tensor_files(component_dir: Path, variant: str | None = None) -> dict[str, Path]:
    """tensor name -> the safetensors file that holds it (of `variant`, export/variants.py; None: the plain files)."""
    for plain in WEIGHT_FILES:
        name = _variant_name(plain, variant)
        index = component_dir / (f"{plain}.index.{variant}.json" if variant else f"{plain}.index.json")
        if index.is_file():  # sharded: the index maps every tensor to its shard
            weight_map = json.loads(index.read_text())["weight_map"]
            return {key: component_dir / shard for key, shard in weight_map.items()}
        single = component_dir / name
        if single.is_file():
            with safe_open(single, framework="pt") as f:
                return dict.fromkeys(f.keys(), single)
    files = " or ".join(_variant_name(n, variant) for n in WEIGHT_FILES)
    raise ExportError(
        f"{component_dir} has no {files} (single or sharded): the backbone's shapes are read "
        "from safetensors weights; convert the checkpoint, or give the API the export (DIFFPLEX_EXPORT_DIR)"
    )


def read_tensors(
    component_dir: Path,
    names: Iterable[str],
    canonical: Callable[[str], str] = lambda key: key,
    variant: str | None = None,
) -> dict[str, torch.Tensor]:
    """The named tensors of one component, as stored (dtype included). `canonical` maps a stored key to the name
    asked for: checkpoints name the same tensor differently across library versions (transformers' `text_model.`)."""
    stored = {canonical(key): (key, file) for key, file in tensor_files(component_dir, variant).items()}
    wanted = list(names)
    if missing := [n for n in wanted if n not in stored]:
        raise ExportError(
            f"{component_dir}'s weights lack {', '.join(missing[:4])}: the checkpoint does not match its config.json"
        )
    tensors = {}
    for file in {stored[n][1] for n in wanted}:
        with safe_open(file, framework="pt") as f:
            tensors |= {n: f.get_tensor(stored[n][0]) for n in wanted if stored[n][1] == file}
    return tensors
