"""`diffplex export`: a diffusers SD-1.x/2.x pipeline -> ONNX graphs with fused CFG and per-row adapter banks.

Exit codes: 0 done (and parity held, with --check), 1 a parity check failed, 2 bad input (message says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adapters.targets import (
    DEFAULT_LORA_RANK,
    DEFAULT_TEXT_ENCODER_TARGETS,
    DEFAULT_UNET_TARGETS,
    DEFAULT_VPT_TOKENS,
)
from export.checkpoint_family import PREDICTION_TYPES
from export.checkpoint_file import is_single_file
from export.errors import ExportError
from export.graph_names import GRAPHS
from models.shapes.paths import PIPELINE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        default=PIPELINE_DIR,
        help="diffusers pipeline directory, or a single-file checkpoint (.safetensors, .ckpt; converted first)",
    )
    parser.add_argument("--config", type=Path, metavar="DIR", help="single file: its diffusers configs (see convert)")
    parser.add_argument(
        "--prediction-type", choices=PREDICTION_TYPES, help="single file: what the model predicts (see convert)"
    )
    parser.add_argument(
        "--converted-dir",
        type=Path,
        metavar="DIR",
        help="where a single-file --model is converted and kept (default: DIFFPLEX_DATA_DIR/models, as diffplex "
        "serve uses: one conversion serves both)",
    )
    parser.add_argument("--out", type=Path, required=True, help="export directory (created)")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=DEFAULT_LORA_RANK,
        help=f"R: the largest total LoRA rank per module ({DEFAULT_LORA_RANK})",
    )
    parser.add_argument(
        "--lora-targets",
        nargs="+",
        default=list(DEFAULT_UNET_TARGETS),
        metavar="MODULE",
        help="U-Net module name suffixes that take LoRA banks (default: attention, proj_in/out, feed-forward)",
    )
    parser.add_argument(
        "--text-encoder-targets",
        nargs="+",
        default=list(DEFAULT_TEXT_ENCODER_TARGETS),
        metavar="MODULE",
        help="text encoder module name suffixes that take LoRA banks",
    )
    parser.add_argument(
        "--vpt-tokens",
        type=int,
        default=DEFAULT_VPT_TOKENS,
        help=f"P: VPT prompt tokens per block ({DEFAULT_VPT_TOKENS}; 0: no VPT)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset the graphs are exported with (17)")
    parser.add_argument("--fp16", action="store_true", help="also write fp16 graphs (and fp16 TensorRT engines)")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs a CUDA GPU)")
    parser.add_argument("--no-optimize", action="store_true", help="skip the ORT-optimized graph variants")
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=GRAPHS, help="export only these")
    parser.add_argument("--check", action="store_true", help="run the parity checks against PyTorch after export")
    parser.add_argument("--check-only", action="store_true", help="check an existing --out without exporting")
    # --bench also works on an existing --out and does not re-export.
    parser.add_argument("--cuda", action="store_true", help="checks also run ONNX Runtime's CUDA provider")
    parser.add_argument("--bench", action="store_true", help="time the fused-CFG U-Net: PyTorch eager vs ORT")
    parser.add_argument("--bench-rows", type=int, default=8, help="guided rows per U-Net call in --bench")
    parser.add_argument(
        "--triton",
        type=Path,
        metavar="DIR",
        help="write an NVIDIA Triton model repository of --out into DIR (exports first unless --out has one)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if is_single_file(args.model):
            from export.single_file_cache import converted_pipeline, default_cache_root

            args.model = converted_pipeline(
                args.model,
                args.converted_dir or default_cache_root(),
                config_dir=args.config,
                prediction_type=args.prediction_type,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
        elif args.config or args.prediction_type:
            raise ExportError("--config and --prediction-type apply to a single-file --model (.safetensors, .ckpt)")
        reuse = args.triton is not None and (args.out / "manifest.json").is_file()
        if not (args.check_only or args.bench or reuse):
            from export.exporter import ExportOptions, export_pipeline  # torch: only once the arguments hold

            options = ExportOptions(
                model_dir=args.model,
                out_dir=args.out,
                lora_rank=args.lora_rank,
                unet_targets=tuple(args.lora_targets),
                text_encoder_targets=tuple(args.text_encoder_targets),
                vpt_tokens=args.vpt_tokens,
                opset=args.opset,
                fp16=args.fp16,
                tensorrt=args.tensorrt,
                optimize=not args.no_optimize,
                graphs=tuple(args.graphs),
            )
            export_pipeline(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
            print(json.dumps({"out": str(args.out), "seconds": options.timings}, indent=2))
        if args.check or args.check_only:
            from export.parity import check_export

            reports = check_export(args.out, args.model, cuda=args.cuda)
            for report in reports:
                print(report.line())
            failed = [r for r in reports if not r.ok and not r.skipped]
            if failed:
                print(f"parity FAILED for {len(failed)} graph variant(s)", file=sys.stderr)
                return 1
        if args.bench:
            from export.benchmark import bench_unet

            print(json.dumps(bench_unet(args.out, args.model, rows=args.bench_rows), indent=2))
        if args.triton is not None:
            from export.triton import write_repository

            models = write_repository(args.out, args.triton)
            print(json.dumps({"triton_repository": str(args.triton), "models": models}, indent=2))
    except ExportError as e:
        print(f"diffplex export: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
