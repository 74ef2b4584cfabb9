"""`diffplex bench SUITE`: in-process benchmarks; each writes its own BENCHMARKS.md section and a JSON file.

Suites: engine (the engine's ratios), hotload (adapter upload to first use, cold and warm), memory (RSS per
hosted adapter), export (export time), precision (fp32 vs fp16, GPU only), profile (where a request's
time goes), guidance (guidance interval, uncond refresh, step caching: rows and FLOPs saved vs judge quality),
lora-rank (U-Net call time by the LoRA banks' rank), sdxl (the SDXL engine vs diffusers at SDXL-base's widths);
`all` runs every suite but engine and sdxl, which have their own long runs.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from models.shapes.paths import PIPELINE_DIR
from service.bench.report import update_section

# suite -> (module with run(args, progress) -> dict and markdown(results, command) -> str; one-line help).
# Only the chosen suite's module is imported, and only to run it, so one suite's imports never slow another.
SUITES = {
    "hotload": ("service.bench.hotload_bench", "adapter upload to first use, cold and warm, p50/p99"),
    "memory": ("service.bench.memory_bench", "resident memory with 0, 100, 1000 hosted adapters"),
    "export": ("service.bench.export_bench", "export_pipeline time on the shipped model"),
    "precision": ("service.bench.precision_bench", "fp32 vs fp16 graphs (GPU only; skipped with the reason)"),
    "profile": ("service.bench.profile_bench", "where a request's time goes: graphs, host, PNG, HTTP"),
    "guidance": (
        "service.bench.guidance_bench",
        "guidance options and step caching: U-Net work saved vs judge quality",
    ),
    "lora-rank": ("service.bench.rank_bench", "U-Net call time by LoRA rank: fixed R 16 vs each call's rank bucket"),
    "sdxl": ("service.bench.sdxl_bench", "SDXL engine vs diffusers at SDXL-base's widths (random weights, ~14 GB)"),
}
LONG_SUITES = ("sdxl",)  # not run by `all`: its model alone takes ~14 GB and minutes to build

# Each suite's own options. They live here rather than in the suites' modules, which import torch: the parser is
# built without importing any suite, so `diffplex bench SUITE --help` answers at once.


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of each request (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept (default 3)")
    parser.add_argument(
        "--quality-samples", type=int, default=64, help="prompts the judge scores per guidance option (default 64)"
    )


def _hotload_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapters", type=int, default=20, help="distinct LoRAs uploaded and used (default 20)")
    parser.add_argument("--steps", type=int, default=4, help="steps of each generation (default 4)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument(
        "--backend", choices=["pytorch", "onnxruntime"], default="pytorch", help="runtime (default pytorch)"
    )


def _memory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--counts", default="100,1000", help="adapter counts to measure at (default 100,1000)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument("--bounded-mib", type=float, default=32.0, help="the small cache budget, MiB (default 32)")


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=1, help="exports to time; the median is kept (default 1)")
    parser.add_argument("--fp16", action="store_true", help="also write the fp16 variants")


def _precision_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=16, help="requests per run (default 16)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of each request (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each precision, interleaved (default 3)")


def _profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=10, help="requests timed on each path (default 10)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of each request (default 20)")
    parser.add_argument(
        "--backend", choices=["pytorch", "onnxruntime"], default="pytorch", help="runtime (default pytorch)"
    )
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="also list the N top functions")


def _guidance_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=256, help="prompts judged per option (default 256)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps of each image (default 25)")


def _sdxl_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of each request (default 4)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds after a warm-up (default 1)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels, a multiple of 32 (default 128)")
    parser.add_argument(
        "--config",
        type=Path,
        help="a diffusers-layout SDXL config directory to build instead of SDXL-base (weights are never read)",
    )


def _rank_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=8, help="U-Net rows per call (default 8)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds; the median is kept (default 30)")


# suite -> its own options (engine first: it is not one of SUITES, `all` does not run it)
OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "engine": _engine_options,
    "hotload": _hotload_options,
    "memory": _memory_options,
    "export": _export_options,
    "precision": _precision_options,
    "profile": _profile_options,
    "guidance": _guidance_options,
    "lora-rank": _rank_options,
    "sdxl": _sdxl_options,
}


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _docstring(module: str) -> str | None:
    """A suite's docstring, read from its source without running it (running it would load torch)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text()), clean=False)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory (backbone)")
    common.add_argument("--export", type=Path, default=Path(".work/export"), help="export dir (made if missing)")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    common.add_argument("--report", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to update")
    common.add_argument("--json", type=Path, default=None, help="results file (default .work/bench/SUITE.json)")
    parser = argparse.ArgumentParser(prog="diffplex bench", description=__doc__)
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    engine = suites.add_parser(
        "engine",
        parents=[common],
        help="engine ratios vs diffusers, CFG, LoRA batches",
        description=_docstring("service.bench.engine_bench"),
    )
    OPTIONS["engine"](engine)
    for name, (module, text) in SUITES.items():
        sub = suites.add_parser(name, parents=[common], help=text, description=_docstring(module))
        OPTIONS[name](sub)
    suites.add_parser("all", parents=[common], help="every suite but engine and sdxl, with their defaults")
    return parser


def _engine(args: argparse.Namespace, command: str) -> dict:
    from service.bench.engine_bench import BenchSettings, markdown, run_bench

    settings = BenchSettings(args.model, args.export, args.steps, args.rounds, args.quality_samples, args.threads)
    results = run_bench(settings, progress=_progress)
    update_section(args.report, "engine", markdown(results, command))
    return results


def _suite(name: str, args: argparse.Namespace, command: str) -> dict:
    module = importlib.import_module(SUITES[name][0])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _progress(f"== {name}")
    if getattr(args, "backend", None) == "onnxruntime":
        from service.bench.export_dir import ensure_export

        ensure_export(args.model, args.export, _progress)
    results = module.run(args, _progress)
    update_section(args.report, name, module.markdown(results, command))
    return results


def _save(name: str, args: argparse.Namespace, results: dict) -> None:
    path = args.json or Path(f".work/bench/{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "diffplex bench " + shlex.join(argv)
    if args.suite == "engine":
        results = _engine(args, command)
        _save("engine", args, results)
    elif args.suite == "all":
        results = {}
        for name in [n for n in SUITES if n not in LONG_SUITES]:  # each with its own defaults, the common options
            suite_args = parser.parse_args([name, *argv[1:]])
            suite_args.json = None  # one file per suite; --json gets them all together below
            results[name] = _suite(name, suite_args, command)
            _save(name, suite_args, results[name])
        if args.json:
            _save("all", args, results)
    else:
        results = _suite(args.suite, args, command)
        _save(args.suite, args, results)
    print(json.dumps(results, indent=2))
    return 0
