"""`diffplex loadtest`: drive a running server over HTTP with a workload file and report what it sustains.

Exit codes: 0 done; 1 the server or the run failed (unreachable, keys refused, every request of a level
refused); 2 bad arguments or a bad workload file.

`diffplex loadtest compare A_DIR B_DIR --label-a continuous --label-b request --out DIR` sets two runs' --out
side by side (e.g. continuous vs request-level batching); `diffplex loadtest compare --help` for its options.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from service.loadtest.errors import LoadtestError
from service.loadtest.run import RunConfig, run, setup_only
from service.loadtest.workload import Workload, WorkloadError, load_workload

EXAMPLE = "deploy/loadtest/two-tenants.yaml"


def _numbers(kind: type) -> object:
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: give one or more numbers > 0, e.g. 1,2,4")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffplex loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--workload", type=Path, required=True, help=f"workload YAML (example: {EXAMPLE})")
    p.add_argument("--rate", type=_numbers(float), default=[], help="open loop: requests/s, or a sweep: 0.5,1,2")
    p.add_argument("--concurrency", type=_numbers(int), default=[], help="closed loop: users, or a sweep: 1,2,4")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per level (default 30)")
    p.add_argument("--arrival", choices=["poisson", "gamma"], default="poisson", help="open-loop arrival process")
    p.add_argument("--cv", type=float, default=None, help="gamma arrivals: coefficient of variation (burstiness)")
    p.add_argument("--seed", type=int, default=None, help="seed of arrivals and request draws (default: the file's)")
    p.add_argument("--slo-ms", type=float, default=5000.0, help="end-to-end latency SLO for goodput (default 5000)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take before it counts as failed")
    p.add_argument("--ready-wait", type=float, default=60.0, help="seconds to wait for /readyz")
    p.add_argument(
        "--admin-key",
        default=os.environ.get("DIFFPLEX_ADMIN_KEY"),
        help="creates the tenants that have no key in the environment (default: $DIFFPLEX_ADMIN_KEY)",
    )
    p.add_argument(
        "--tenant-suffix", default=None, help="appended to created tenants' names (default: a random -lt<hex>)"
    )
    p.add_argument("--keep-tenants", action="store_true", help="keep the tenants this run created (default: deleted)")
    p.add_argument(
        "--setup-only",
        action="store_true",
        help="create tenants, upload adapters, print their keys as `export` lines, stop",
    )
    p.add_argument("--no-probe", action="store_true", help="skip the one probe request per (tenant, request kind)")
    p.add_argument("--out", type=Path, default=Path(".work/loadtest"), help="report directory (JSON, Markdown, PNG)")
    p.add_argument(
        "--benchmarks",
        type=Path,
        nargs="?",
        const=Path("BENCHMARKS.md"),
        default=None,
        help="also write the `loadtest` section of this file (default BENCHMARKS.md)",
    )
    return p


def _command(argv: list[str]) -> str:
    """The command line as typed, with the admin key's value hidden."""
    shown = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--admin-key":
            arg = "***"
        elif arg.startswith("--admin-key="):
            arg = "--admin-key=***"
        shown.append(arg)
    # "***" unquoted: it marks a hidden value, it is not meant to be pasted back as a glob.
    return "diffplex loadtest " + " ".join(a if a.endswith("***") else shlex.quote(a) for a in shown)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # a subcommand in front of this parser, so `diffplex loadtest --url ...` stays as is
        from service.loadtest import compare_cli

        return compare_cli.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.rate or args.concurrency or args.setup_only):
        parser.error("give --rate (open loop) and/or --concurrency (closed loop), or --setup-only")
    if args.cv is not None and args.arrival != "gamma":
        parser.error("--cv sets the burstiness of --arrival gamma; Poisson arrivals have CV 1")
    if args.cv is not None and args.cv <= 0:
        parser.error("--cv must be > 0")
    console = Console(stderr=True)
    try:
        workload = load_workload(args.workload)
    except WorkloadError as error:
        print(f"diffplex loadtest: {error}", file=sys.stderr)
        return 2
    config = RunConfig(
        url=args.url,
        rates=args.rate,
        concurrency=args.concurrency,
        duration_s=args.duration,
        process=args.arrival,
        cv=args.cv or 1.0,
        seed=workload.seed if args.seed is None else args.seed,
        slo_s=args.slo_ms / 1000,
        timeout_s=args.timeout,
        ready_wait_s=args.ready_wait,
        admin_key=args.admin_key or None,
        tenant_suffix=f"-lt{secrets.token_hex(3)}" if args.tenant_suffix is None else args.tenant_suffix,
        keep_tenants=args.keep_tenants,
        probe=not args.no_probe,
    )
    try:
        if args.setup_only:
            for variable, key in asyncio.run(setup_only(config, workload)).items():
                print(f"export {variable}={shlex.quote(key)}")
            return 0
        started = time.time()
        report = asyncio.run(run(config, workload, console))
    except LoadtestError as error:
        print(f"diffplex loadtest: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("diffplex loadtest: interrupted", file=sys.stderr)
        return 130
    _finish(report, args, argv, config, workload, started)
    if report["aborted"]:
        print(f"diffplex loadtest: error: {report['aborted']}", file=sys.stderr)
        return 1
    return 0


def _finish(
    report: dict,
    args: argparse.Namespace,
    argv: list[str],
    config: RunConfig,
    workload: Workload,
    started: float,
) -> None:
    from service.bench.report import machine, update_section
    from service.loadtest import plots
    from service.loadtest import report as reports

    report |= {
        "command": _command(argv),
        "machine": machine(with_torch=False),
        "started": started,
        "config": {
            "url": config.url,
            "arrival": config.process,
            "cv": config.cv,
            "seed": config.seed,
            "duration_s": config.duration_s,
            "slo_ms": config.slo_s * 1000,
            "rates": config.rates,
            "concurrency": config.concurrency,
        },
        "workload": {
            "path": str(args.workload),
            "name": workload.name,
            "tenants": [{"name": t.name, "weight": t.weight} for t in workload.tenants],
        },
    }
    paths = plots.plot(report, args.out)
    reports.write(report, args.out, paths)
    if args.benchmarks is not None:
        update_section(args.benchmarks, "loadtest", reports.benchmarks_section(report, args.out))
    print(f"report: {args.out / 'report.md'} (report.json, {len(paths)} plots)", file=sys.stderr)
