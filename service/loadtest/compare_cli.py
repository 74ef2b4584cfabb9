"""`diffplex loadtest compare A_DIR B_DIR`: two `diffplex loadtest` runs of the same load against two servers,
side by side: goodput under the SLO, images/s, p50 and p99 per offered load, B's goodput over A's, and plots.

For continuous vs request-level batching: run the same `diffplex loadtest` (workload, --rate/--concurrency,
--duration, --seed, --slo-ms) against a default server and against one started with
DIFFPLEX_ENGINE__BATCHING=request, each with its own --out, then compare the two --out directories.

Exit codes: 0 done; 2 bad arguments, a directory without a load-test report, or runs of different loads;
1 the output could not be written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from service.loadtest.errors import LoadtestError

PROG = "diffplex loadtest compare"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, metavar="A_DIR", help="run A: the --out directory of a `diffplex loadtest` run")
    p.add_argument("b", type=Path, metavar="B_DIR", help="run B, the same load against the other server")
    p.add_argument(
        "--label-a",
        metavar="LABEL",
        default=None,
        help="A's name in tables and plots, e.g. continuous (default: A_DIR's)",
    )
    p.add_argument(
        "--label-b", metavar="LABEL", default=None, help="B's name in tables and plots, e.g. request (default: B_DIR's)"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=Path(".work/loadtest-compare"),
        help="where comparison.md, comparison.json and the PNGs go (default .work/loadtest-compare)",
    )
    p.add_argument(
        "--benchmarks",
        type=Path,
        metavar="FILE",
        nargs="?",
        const=Path("BENCHMARKS.md"),
        default=None,
        help="also write the `loadtest-batching` section of this file (default BENCHMARKS.md), linking "
        "--out/comparison.md: --out must then be committed beside it, e.g. deploy/loadtest/results/batching",
    )
    return p


def _label(given: str | None, path: Path) -> str:
    """The label given, else the run's directory name (`.work/lt-continuous` -> lt-continuous)."""
    if given is not None:
        return given.strip()
    resolved = path.resolve()
    return (resolved.parent if resolved.is_file() else resolved).name


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    labels = _label(args.label_a, args.a), _label(args.label_b, args.b)
    if any(not label or "|" in label or "\n" in label for label in labels):
        parser.error("labels must be non-empty and have no `|` or newline (they head Markdown table columns)")
    if labels[0] == labels[1]:
        parser.error(f"both runs are labelled {labels[0]!r}: give --label-a and --label-b")
    # Imported after parsing: matplotlib takes a second to load, and `--help` or a typo should answer at once.
    from service.bench.report import update_section
    from service.loadtest import compare, compare_plots, compare_report

    try:
        comparison = compare.compare(compare.load_run(args.a, labels[0]), compare.load_run(args.b, labels[1]))
        # checked before anything is written: a refused link leaves no half-made comparison behind
        link = None if args.benchmarks is None else compare_report.benchmarks_link(args.benchmarks, args.out)
    except LoadtestError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    comparison["command"] = f"{PROG} {shlex.join(argv)}"
    try:
        paths = compare_plots.plot(comparison, args.out)
        compare_report.write(comparison, args.out, paths)
        if link is not None:
            update_section(args.benchmarks, compare_report.SECTION, compare_report.benchmarks_section(comparison, link))
    except OSError as error:
        print(f"{PROG}: error: cannot write the comparison: {error}", file=sys.stderr)
        return 1
    print(f"comparison: {args.out / 'comparison.md'} (comparison.json, {len(paths)} plots)", file=sys.stderr)
    return 0
