"""The load test's report: JSON (everything), Markdown (tables), and the BENCHMARKS.md section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.bench.report import table

MODES = {"open": "Open loop (Poisson/gamma arrivals)", "closed": "Closed loop (concurrent users)"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _level_row(level: dict[str, Any]) -> list[str]:
    lat, good = level["latency_ms"], level["goodput"]
    jain = level["jain_weighted"]
    return [
        f"{level['offered']:g}",
        str(level["sent"]),
        str(level["ok"]),
        str(level["failed"]),
        _rate(level["images_per_s"]),
        _rate(level["unet_rows_per_s"]),
        _ms(lat["p50"]),
        _ms(lat["p90"]),
        _ms(lat["p99"]),
        _ms(level["queue_ms"]["p50"]),
        _ms(level["compute_ms"]["p50"]),
        _ms(level["overhead_ms"]["p50"]),
        _rate(good["images_per_s"]),
        f"{100 * good['slo_attainment']:.0f}%",
        "-" if jain is None else f"{jain:.3f}",
    ]


def level_tables(report: dict[str, Any]) -> list[str]:
    lines = []
    slo = report["config"]["slo_ms"]
    for mode, title in MODES.items():
        levels = [lv for lv in report["levels"] if lv["mode"] == mode]
        if not levels:
            continue
        header = [
            "req/s offered" if mode == "open" else "users",
            "sent",
            "ok",
            "failed",
            "images/s",
            "U-Net rows/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "queue p50 ms",
            "compute p50 ms",
            "HTTP+PNG p50 ms",
            f"goodput img/s (SLO {slo:g} ms)",
            "within SLO",
            "Jain (weighted)",
        ]
        lines += [f"### {title}", "", table(header, [_level_row(lv) for lv in levels]), ""]
    return lines


def tenant_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for level in report["levels"]:
        unit = "req/s" if level["mode"] == "open" else "users"
        for tenant, t in level["tenants"].items():
            rows.append(
                [
                    f"{level['mode']} {level['offered']:g} {unit}",
                    tenant,
                    t["sent"],
                    t["ok"],
                    _rate(t["images_per_s"]),
                    _ms(t["p50_ms"]),
                    _ms(t["p99_ms"]),
                ]
            )
    return ["### Per tenant", "", table(["level", "tenant", "sent", "ok", "images/s", "p50 ms", "p99 ms"], rows), ""]


def header(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    arrivals = c["arrival"] if c["arrival"] == "poisson" else f"gamma, CV {c['cv']:g}"
    tenants = ", ".join(f"{t['name']} (weight {t['weight']:g})" for t in report["workload"]["tenants"])
    backend = report["server"].get("backend", "?")
    return [
        f"Command: `{report['command']}`",
        "",
        f"Client machine: {report['machine']}. Server: {c['url']} (backend {backend}). Workload "
        f"`{report['workload']['path']}`: tenants {tenants}. Arrivals: {arrivals}, seed {c['seed']}; "
        f"{c['duration_s']:g} s per level; end-to-end SLO {c['slo_ms']:g} ms. Throughput counts the drain after "
        "each level's window; U-Net rows come from the server's `/metrics` (a guided row counts 2); queue and "
        "compute from the per-image `timings`; HTTP+PNG is latency minus the server's time per image.",
        "",
    ]


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# Load test: {report['workload']['name']}", "", *header(report)]
    if report["aborted"]:
        lines += [f"**Stopped early**: {report['aborted']}", ""]
    lines += level_tables(report) + tenant_table(report)
    errors = [(lv, lv["errors"]) for lv in report["levels"] if lv["errors"]]
    if errors:
        lines += ["### Errors", ""]
        lines += [
            f"- {lv['mode']} {lv['offered']:g}: " + ", ".join(f"{k} x{v}" for k, v in e.items()) for lv, e in errors
        ]
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def benchmarks_section(report: dict[str, Any], out_dir: Path) -> str:
    lines = ["## Load test (`diffplex loadtest`)", "", *header(report)]
    lines += level_tables(report)
    lines += [f"Full report (per tenant, errors, plots): `{out_dir}/report.md`."]
    return "\n".join(lines)


def write(report: dict[str, Any], out_dir: Path, plots: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(markdown(report, plots))
