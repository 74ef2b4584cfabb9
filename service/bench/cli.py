"""`diffplex bench engine`: run the in-process engine benchmark and write its BENCHMARKS.md section."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from models.shapes.train_backbone import PIPELINE_DIR
from service.bench.report import update_section


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="diffplex bench", description=__doc__)
    parser.add_argument("suite", choices=["engine"], help="what to measure")
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR)
    parser.add_argument("--export", type=Path, default=Path(".work/export"), help="export dir (made if missing)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--report", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to update")
    parser.add_argument("--json", type=Path, default=Path(".work/bench/engine.json"))
    args = parser.parse_args(argv)
    from service.bench.engine_bench import BenchSettings, markdown, run_bench

    settings = BenchSettings(args.model, args.export, args.steps, args.rounds, args.quality_samples, args.threads)
    results = run_bench(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    update_section(args.report, "engine", markdown(results, "diffplex bench " + shlex.join(argv)))
    print(json.dumps(results, indent=2))
    return 0
