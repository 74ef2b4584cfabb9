"""`diffplex bench SUITE`: in-process benchmarks; each writes its own BENCHMARKS.md section and a JSON file.

Suites: engine (the engine's ratios), hotload (adapter upload to first use, cold and warm), memory (RSS per
hosted adapter), export (export time), precision (fp32 vs fp16, GPU only), profile (where a request's
time goes), guidance (guidance interval and uncond refresh: rows saved vs judge quality); `all` runs every
suite but engine, which has its own long run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from pathlib import Path

from models.shapes.train_backbone import PIPELINE_DIR
from service.bench.export_dir import ensure_export
from service.bench.report import update_section

# suite -> (module with add_arguments(parser), run(args, progress) -> dict, markdown(results, command) -> str;
# one-line help). Only the chosen suite's module is imported, so one suite's imports never slow another.
SUITES = {
    "hotload": ("service.bench.hotload_bench", "adapter upload to first use, cold and warm, p50/p99"),
    "memory": ("service.bench.memory_bench", "resident memory with 0, 100, 1000 hosted adapters"),
    "export": ("service.bench.export_bench", "export_pipeline time on the shipped model"),
    "precision": ("service.bench.precision_bench", "fp32 vs fp16 graphs (GPU only; skipped with the reason)"),
    "profile": ("service.bench.profile_bench", "where a request's time goes: graphs, host, PNG, HTTP"),
    "guidance": ("service.bench.guidance_bench", "guidance interval and uncond refresh: rows saved vs judge quality"),
}


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_parser(load: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """`load`: the suites whose own options are added (their modules imported)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, default=PIPELINE_DIR)
    common.add_argument("--export", type=Path, default=Path(".work/export"), help="export dir (made if missing)")
    common.add_argument("--threads", type=int, default=None)
    common.add_argument("--report", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to update")
    common.add_argument("--json", type=Path, default=None, help="results file (default .work/bench/SUITE.json)")
    parser = argparse.ArgumentParser(prog="diffplex bench", description=__doc__)
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    engine = suites.add_parser("engine", parents=[common], help="engine ratios vs diffusers, CFG, LoRA batches")
    engine.add_argument("--steps", type=int, default=20)
    engine.add_argument("--rounds", type=int, default=3)
    engine.add_argument("--quality-samples", type=int, default=64)
    for name, (module, text) in SUITES.items():
        if name in load:
            imported = importlib.import_module(module)
            sub = suites.add_parser(name, parents=[common], help=text, description=imported.__doc__)
            imported.add_arguments(sub)
        else:
            suites.add_parser(name, parents=[common], help=text)
    suites.add_parser("all", parents=[common], help="every suite but engine, with their defaults")
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
    chosen = argv[0] if argv else ""
    parser = build_parser(tuple(SUITES) if chosen == "all" else (chosen,))
    args = parser.parse_args(argv)
    command = "diffplex bench " + shlex.join(argv)
    if args.suite == "engine":
        results = _engine(args, command)
        _save("engine", args, results)
    elif args.suite == "all":
        results = {}
        for name in SUITES:  # each suite with its own defaults and the common options given to `all`
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
