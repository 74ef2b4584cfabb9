"""Two load-test runs side by side: the same load (workload, arrivals, seed, levels, SLO) against two servers.

Made for continuous vs request-level batching (`DIFFPLEX_ENGINE__BATCHING=request` on one server), but any two
runs of the same load compare. Runs of different loads are refused rather than shown: a table that pairs 2 req/s
with 2 req/s of another seed, duration or SLO would read as a difference between the servers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.bench.report import shown_path
from service.loadtest.errors import LoadtestError
from service.loadtest.report import MODES

REPORT = "report.json"  # what `diffplex loadtest` writes into its --out (report.write)
BAD_INPUT = 2  # the load test's exit code for bad arguments
LEVEL_FIELDS = ("mode", "offered", "images_per_s", "goodput", "latency_ms")
# config fields both runs must share, as the report names them -> as a user reads them
SHARED = {"arrival": "arrival process", "seed": "seed", "duration_s": "seconds per level", "slo_ms": "SLO (ms)"}


@dataclass
class Run:
    label: str
    source: Path  # the run's --out directory, or its report.json
    report: dict[str, Any]


def load_run(path: Path, label: str) -> Run:
    """A run's report.json, from its --out directory (or the file itself); LoadtestError when it is not one."""
    if not path.exists():
        raise LoadtestError(f"{path}: no such directory (give the --out of a `diffplex loadtest` run)", BAD_INPUT)
    file = path / REPORT if path.is_dir() else path
    if not file.is_file():
        raise LoadtestError(f"{path}: has no {REPORT}: is it the --out of a `diffplex loadtest` run?", BAD_INPUT)
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LoadtestError(f"{file}: not readable as JSON ({error})", BAD_INPUT) from None
    levels = report.get("levels") if isinstance(report, dict) else None
    if not isinstance(levels, list) or not isinstance(report.get("config"), dict):
        raise LoadtestError(f"{file}: not a `diffplex loadtest` report (no `levels` and `config`)", BAD_INPUT)
    if not isinstance(report["config"].get("slo_ms"), int | float):  # goodput means nothing without it
        raise LoadtestError(f"{file}: the report does not record its SLO (config.slo_ms)", BAD_INPUT)
    if not all(_valid(level) for level in levels):
        raise LoadtestError(f"{file}: a level lacks {', '.join(LEVEL_FIELDS)}: not a load-test report", BAD_INPUT)
    if not levels:
        why = report.get("aborted") or "nothing was measured"
        raise LoadtestError(f"{file}: the run has no levels ({why})", BAD_INPUT)
    return Run(label, path, report)


def _valid(level: Any) -> bool:
    """Has every field the comparison reads (a report from another tool, or a damaged one, fails here, not later)."""
    if not isinstance(level, dict) or any(key not in level for key in LEVEL_FIELDS):
        return False
    good, latency = level["goodput"], level["latency_ms"]
    return (
        isinstance(good, dict)
        and "images_per_s" in good
        and isinstance(latency, dict)
        and "p50" in latency
        and "p99" in latency
    )


def _levels(run: Run, mode: str) -> list[dict[str, Any]]:
    return sorted((lv for lv in run.report["levels"] if lv["mode"] == mode), key=lambda lv: lv["offered"])


def _offered(run: Run, mode: str) -> list[float]:
    return [float(lv["offered"]) for lv in _levels(run, mode)]


def _same(x: list[float], y: list[float]) -> bool:
    return len(x) == len(y) and all(math.isclose(u, v) for u, v in zip(x, y, strict=True))


def _workload(run: Run) -> tuple[Any, ...] | None:
    """What the report records of the workload: its name and tenants' weights (not its path: a copy compares)."""
    w = run.report.get("workload")
    if not isinstance(w, dict):
        return None
    return w.get("name"), tuple((t.get("name"), t.get("weight")) for t in w.get("tenants", []))


def problems(a: Run, b: Run) -> list[str]:
    """Why the two runs did not run the same load; empty when they did. Fields only one run records are skipped."""
    found = []
    modes = [m for m in MODES if _levels(a, m) or _levels(b, m)]
    for mode in modes:
        x, y = _offered(a, mode), _offered(b, mode)
        if not _same(x, y):
            unit = "req/s" if mode == "open" else "users"
            found.append(f"{mode}-loop levels ({unit}): {a.label} ran {x or 'none'}, {b.label} ran {y or 'none'}")
    ca, cb = a.report["config"], b.report["config"]
    for key, name in SHARED.items():
        if ca.get(key) is not None and cb.get(key) is not None and ca[key] != cb[key]:
            found.append(f"{name}: {a.label} {ca[key]}, {b.label} {cb[key]}")
    if ca.get("arrival") == cb.get("arrival") == "gamma" and ca.get("cv") != cb.get("cv"):
        found.append(f"gamma CV: {a.label} {ca.get('cv')}, {b.label} {cb.get('cv')}")
    wa, wb = _workload(a), _workload(b)
    if wa is not None and wb is not None and wa != wb:
        found.append(f"workload (name, tenant weights): {a.label} {wa}, {b.label} {wb}")
    if found:  # a run that stopped early is the usual reason its levels differ
        found += [f"{r.label} stopped early: {r.report['aborted']}" for r in (a, b) if r.report.get("aborted")]
    return found


def _figures(level: dict[str, Any]) -> dict[str, Any]:
    good, latency = level["goodput"], level["latency_ms"]
    return {
        "goodput_images_per_s": good["images_per_s"],
        "images_per_s": level["images_per_s"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "slo_attainment": good.get("slo_attainment"),
        "sent": level.get("sent"),
        "ok": level.get("ok"),
    }


def ratio(b: float | None, a: float | None) -> float | None:
    """b / a, None where it means nothing (a missing figure, or a = 0)."""
    return None if a is None or b is None or a <= 0 else b / a


def _describe(run: Run) -> dict[str, Any]:
    server = run.report.get("server") or {}
    return {
        "label": run.label,
        "report": shown_path(run.source),
        "command": run.report.get("command"),
        "url": run.report["config"].get("url"),
        "backend": server.get("backend"),
        "batching": server.get("batching"),  # recorded only where the server's /readyz says it
        "machine": run.report.get("machine"),
        "aborted": run.report.get("aborted"),
    }


def compare(a: Run, b: Run) -> dict[str, Any]:
    """The comparison (what comparison.json holds); LoadtestError when the runs did not run the same load."""
    if found := problems(a, b):
        raise LoadtestError(
            f"{a.label} and {b.label} did not run the same load, so their figures do not compare:\n  - "
            + "\n  - ".join(found)
            + "\nrun `diffplex loadtest` against both servers with the same --workload, --rate/--concurrency, "
            "--duration, --arrival, --seed and --slo-ms",
            BAD_INPUT,
        )
    config = a.report["config"]
    modes = {}
    for mode in MODES:
        rows = []
        for x, y in zip(_levels(a, mode), _levels(b, mode), strict=True):
            fa, fb = _figures(x), _figures(y)
            good = ratio(fb["goodput_images_per_s"], fa["goodput_images_per_s"])
            rows.append({"offered": x["offered"], "a": fa, "b": fb, "goodput_ratio_b_over_a": good})
        if rows:
            modes[mode] = rows
    return {
        "a": _describe(a),
        "b": _describe(b),
        "shared": {key: config.get(key) for key in ("arrival", "cv", "seed", "duration_s", "slo_ms")},
        "workload": a.report.get("workload"),
        "modes": modes,
    }
