"""The comparison's files: comparison.json (everything), comparison.md (a table per mode, the plots) and the
BENCHMARKS.md section, whose link to comparison.md must still work once both are committed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from service.bench.report import table
from service.loadtest.compare import BAD_INPUT
from service.loadtest.errors import LoadtestError
from service.loadtest.report import MODES, _ms, _rate

SECTION = "loadtest-batching"  # BENCHMARKS.md's section, beside the single run's `loadtest`


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def level_tables(comparison: dict[str, Any]) -> list[str]:
    a, b = comparison["a"]["label"], comparison["b"]["label"]
    slo = comparison["shared"]["slo_ms"]
    lines = []
    for mode, rows in comparison["modes"].items():
        header = [
            "req/s offered" if mode == "open" else "users",
            f"goodput img/s {a}",
            f"goodput img/s {b}",
            f"goodput {b} / {a}",
            f"images/s {a}",
            f"images/s {b}",
            f"p50 ms {a}",
            f"p50 ms {b}",
            f"p99 ms {a}",
            f"p99 ms {b}",
            f"within SLO {a}",
            f"within SLO {b}",
        ]
        body = [
            [
                f"{row['offered']:g}",
                _rate(row["a"]["goodput_images_per_s"]),
                _rate(row["b"]["goodput_images_per_s"]),
                _times(row["goodput_ratio_b_over_a"]),
                _rate(row["a"]["images_per_s"]),
                _rate(row["b"]["images_per_s"]),
                _ms(row["a"]["p50_ms"]),
                _ms(row["b"]["p50_ms"]),
                _ms(row["a"]["p99_ms"]),
                _ms(row["b"]["p99_ms"]),
                _percent(row["a"]["slo_attainment"]),
                _percent(row["b"]["slo_attainment"]),
            ]
            for row in rows
        ]
        lines += [f"### {MODES[mode]}, SLO {slo:g} ms", "", table(header, body), ""]
    return lines


def _run_line(name: str, run: dict[str, Any]) -> str:
    server = f"backend {run['backend'] or '?'}" + (f", batching {run['batching']}" if run["batching"] else "")
    line = f"- {name}, **{run['label']}**: `{run['command'] or '?'}`; server {run['url'] or '?'} ({server}); "
    line += f"client {run['machine'] or '?'}; report `{run['report']}`."
    return line + (f" Stopped early: {run['aborted']}." if run["aborted"] else "")


def header(comparison: dict[str, Any]) -> list[str]:
    s, a, b = comparison["shared"], comparison["a"]["label"], comparison["b"]["label"]
    w = comparison["workload"] or {}
    tenants = ", ".join(f"{t['name']} (weight {t['weight']:g})" for t in w.get("tenants", []))
    arrivals = s["arrival"] if s["arrival"] != "gamma" else f"gamma, CV {_g(s['cv'])}"
    return [
        _run_line("A", comparison["a"]),
        _run_line("B", comparison["b"]),
        "",
        f"Both: workload `{w.get('path', '?')}` (tenants {tenants or '?'}); arrivals {arrivals}, seed {s['seed']}; "
        f"{_g(s['duration_s'])} s per level; end-to-end SLO {s['slo_ms']:g} ms. Goodput counts the images of requests "
        f"answered within the SLO, per second; `{b} / {a}` is B's goodput over A's (above 1: {b} sustains more; "
        f"`-` where A's is 0). Compared with `{comparison.get('command', 'diffplex loadtest compare')}`.",
        "",
    ]


def markdown(comparison: dict[str, Any], plots: list[str]) -> str:
    a, b = comparison["a"]["label"], comparison["b"]["label"]
    lines = [f"# Load test comparison: {a} vs {b}", "", *header(comparison), *level_tables(comparison)]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def git_ignored(path: Path) -> bool:
    """Whether git ignores `path` (False outside a repository or without git): a link to it would not be committed."""
    try:
        # git runs in the nearest folder that exists: --out is usually made by this very run.
        cwd = next(p for p in path.resolve().parents if p.is_dir())
        done = subprocess.run(
            ["git", "check-ignore", "-q", str(path.resolve())], cwd=cwd, capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def benchmarks_link(benchmarks: Path, out_dir: Path) -> str:
    """comparison.md relative to the BENCHMARKS.md that links it; LoadtestError when the link would not survive a
    commit (--out outside the file's directory, or git-ignored like .work/)."""
    root = benchmarks.resolve().parent
    target = out_dir.resolve() / "comparison.md"
    try:
        link = target.relative_to(root).as_posix()
    except ValueError:
        raise LoadtestError(
            f"--benchmarks links the comparison from {benchmarks}, so --out must be under {root} "
            "(e.g. deploy/loadtest/results/batching), where it is committed with it",
            BAD_INPUT,
        ) from None
    if git_ignored(target):
        raise LoadtestError(
            f"--out {out_dir} is ignored by git, so the link from {benchmarks} would break once committed: "
            "use e.g. --out deploy/loadtest/results/batching",
            BAD_INPUT,
        )
    return link


def benchmarks_section(comparison: dict[str, Any], link: str) -> str:
    a, b = comparison["a"]["label"], comparison["b"]["label"]
    lines = [f"## Load test comparison: {a} vs {b} (`diffplex loadtest compare`)", "", *header(comparison)]
    lines += level_tables(comparison)
    lines += [f"Full comparison (plots): [{link}]({link})."]
    return "\n".join(lines)


def write(comparison: dict[str, Any], out_dir: Path, plots: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"plots": [Path(p).name for p in plots]}
    (out_dir / "comparison.json").write_text(json.dumps(comparison | names, indent=2))
    (out_dir / "comparison.md").write_text(markdown(comparison, plots))
