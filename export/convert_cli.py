"""`diffplex convert`: a single-file SD-1.x/2.x checkpoint (`.safetensors` or `.ckpt`, original LDM / A1111 key
layout) -> a diffusers pipeline directory that `diffplex serve` and `diffplex export` take. Offline: the configs
come with diffplex (SD-1.5, SD-2.1 768 px v-prediction, SD-2.1-base 512 px epsilon) or from --config.

A .ckpt is opened with torch.load(weights_only=True) only: one holding other Python objects is refused unread.

Exit codes: 0 written, 2 refused or failed (the message says why and what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from export.checkpoint_family import PREDICTION_TYPES  # without torch, as --help needs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single-file", type=Path, required=True, metavar="FILE", help=".safetensors or .ckpt")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="pipeline directory to write (new)")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="DIR",
        help="a diffusers-layout directory whose configs and tokenizer describe the checkpoint (default: the "
        "shipped configs of the detected family)",
    )
    parser.add_argument(
        "--prediction-type",
        choices=PREDICTION_TYPES,
        help="what the model predicts, when the default is wrong (SD-1: epsilon; SD-2: v_prediction with the 768 px "
        "configs unless the checkpoint is the 512 px base model, epsilon)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.errors import ExportError
    from export.single_file import convert_single_file  # torch: only once the arguments hold

    try:
        conversion = convert_single_file(
            args.single_file,
            args.out,
            config_dir=args.config,
            prediction_type=args.prediction_type,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ExportError as e:
        print(f"diffplex convert: {e}", file=sys.stderr)
        return 2
    print(json.dumps(conversion.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
