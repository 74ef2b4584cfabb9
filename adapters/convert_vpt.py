"""`diffplex adapters convert-vpt`: a format-1 VPT file (tokens before each block's norm1) as format 2.

A format-1 token X of block j gives attn1 the keys `to_k(norm1_j(X))`; the format-2 token norm1_j(X) gives
the same keys, so the converted file draws exactly what the old one drew (`adapters.vpt`). The conversion
needs the backbone's norm1 weights, which the API role never loads, hence a command rather than a
conversion at upload. Bad input exits with code 2 and one line saying what to change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.errors import AdapterError
from models.shapes.paths import PIPELINE_DIR

if TYPE_CHECKING:
    from adapters.formats.caps import ReadCaps
    from adapters.types import VPTAdapter

EXIT_BAD_INPUT = 2


def convert_vpt_bytes(data: bytes, model_dir: Path, caps: ReadCaps | None = None) -> VPTAdapter:
    """The format-1 VPT in `data`, converted on the backbone in `model_dir` (the one it was trained on)."""
    # torch and diffusers: imported when a conversion runs, so `diffplex adapters convert-vpt --help` answers at once
    from adapters.formats.caps import ReadCaps
    from adapters.formats.safetensors_io import read_safetensors
    from adapters.formats.vpt import PRE_NORM_FORMAT_VERSION, read_vpt
    from adapters.install import vpt_block_norms
    from adapters.spec import build_spec
    from adapters.training.loop import load_frozen_pipeline
    from adapters.types import VPTAdapter
    from adapters.validate import ExportLimits, validate_vpt
    from adapters.vpt import convert_pre_norm_tokens

    tensors, metadata = read_safetensors(data, caps or ReadCaps())
    old = read_vpt(tensors, metadata, version=PRE_NORM_FORMAT_VERSION)
    pipe = load_frozen_pipeline(model_dir)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    if old.backbone_fingerprint != spec.fingerprint:
        raise AdapterError(
            f"the VPT was trained on backbone {old.backbone_fingerprint[:12]}, not on --model {model_dir} "
            f"({spec.fingerprint[:12]}): convert it with the backbone it was trained on"
        )
    # Blocks, dims and finite values as an upload checks them; the token cap is the upload's business, not ours.
    validate_vpt(old, spec, ExportLimits(max_lora_rank=1, max_vpt_tokens=max(1, old.num_tokens)))
    norms = vpt_block_norms(pipe.unet, spec, len(old.tokens))
    tokens = tuple(convert_pre_norm_tokens(t, norm) for t, norm in zip(old.tokens, norms, strict=True))
    return VPTAdapter(old.depth, tokens, old.backbone_fingerprint)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffplex adapters convert-vpt",
        description="Convert a format-1 VPT file (tokens before norm1) to the format diffplex serves (2).",
    )
    p.add_argument("--file", type=Path, required=True, help="the format-1 VPT file")
    p.add_argument("--out", type=Path, required=True, help="where to write the format-2 file (.safetensors)")
    p.add_argument("--model", type=Path, default=PIPELINE_DIR, help="the backbone it was trained on (diffusers dir)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if not args.file.is_file():
            raise AdapterError(f"--file {args.file}: no such file")
        if args.out.suffix != ".safetensors" or not args.out.parent.is_dir():
            raise AdapterError(f"--out {args.out}: a .safetensors path in an existing folder")
        adapter = convert_vpt_bytes(args.file.read_bytes(), args.model)
    except (AdapterError, FileNotFoundError) as error:
        print(f"diffplex adapters convert-vpt: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from adapters.formats.vpt import write_vpt

    write_vpt(adapter, args.out)
    print(f"wrote {args.out}: {adapter.depth} VPT, {adapter.num_tokens} tokens, format 2")
    return 0
