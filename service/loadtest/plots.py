"""PNG plots of a load test (matplotlib, Agg: no display needed): one set per mode, x = offered load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

X_LABEL = {"open": "offered load (requests/s)", "closed": "concurrent users"}


def _values(levels: list[dict[str, Any]], get: Any) -> list[float]:
    return [float("nan") if (v := get(lv)) is None else v for lv in levels]


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _throughput(levels: list[dict[str, Any]], mode: str, path: Path) -> None:
    x = [lv["offered"] for lv in levels]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, _values(levels, lambda lv: lv["images_per_s"]), "o-", label="images/s")
    ax.plot(x, _values(levels, lambda lv: lv["goodput"]["images_per_s"]), "s--", label="goodput images/s (SLO)")
    ax.set_xlabel(X_LABEL[mode])
    ax.set_ylabel("images/s")
    rows = ax.twinx()
    rows.plot(x, _values(levels, lambda lv: lv["unet_rows_per_s"]), "^:", color="tab:red", label="U-Net rows/s")
    rows.set_ylabel("U-Net rows/s")
    handles = ax.get_legend_handles_labels()[0] + rows.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left")
    ax.set_title("throughput vs offered load")
    _save(fig, path)


def _latency(levels: list[dict[str, Any]], mode: str, slo_ms: float, path: Path) -> None:
    x = [lv["offered"] for lv in levels]
    fig, ax = plt.subplots(figsize=(6, 4))
    for q in ("p50", "p90", "p99"):
        ax.plot(x, _values(levels, lambda lv, q=q: lv["latency_ms"][q]), "o-", label=q)
    ax.axhline(slo_ms, color="grey", linestyle="--", label=f"SLO {slo_ms:g} ms")
    ax.set_xlabel(X_LABEL[mode])
    ax.set_ylabel("end-to-end latency (ms)")
    ax.legend()
    ax.set_title("latency vs offered load")
    _save(fig, path)


def _breakdown(levels: list[dict[str, Any]], mode: str, path: Path) -> None:
    labels = [f"{lv['offered']:g}" for lv in levels]
    parts = [("queue", "queue_ms"), ("compute", "compute_ms"), ("HTTP + PNG", "overhead_ms")]
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(levels)
    for name, key in parts:
        heights = [lv[key]["mean"] or 0.0 for lv in levels]
        ax.bar(labels, heights, bottom=bottom, label=name)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel(X_LABEL[mode])
    ax.set_ylabel("mean time per image (ms)")
    ax.legend()
    ax.set_title("queue vs compute time")
    _save(fig, path)


def _fairness(levels: list[dict[str, Any]], mode: str, path: Path) -> None:
    x = [lv["offered"] for lv in levels]
    fig, (tput, p99) = plt.subplots(1, 2, figsize=(10, 4))
    for tenant in levels[0]["tenants"]:
        tput.plot(x, _values(levels, lambda lv, t=tenant: lv["tenants"][t]["images_per_s"]), "o-", label=tenant)
        p99.plot(x, _values(levels, lambda lv, t=tenant: lv["tenants"][t]["p99_ms"]), "o-", label=tenant)
    tput.set_ylabel("images/s")
    p99.set_ylabel("p99 latency (ms)")
    jain = [lv["jain_weighted"] for lv in levels]
    tput.set_title("per-tenant throughput (Jain " + ", ".join("-" if j is None else f"{j:.2f}" for j in jain) + ")")
    p99.set_title("per-tenant p99 latency")
    for ax in (tput, p99):
        ax.set_xlabel(X_LABEL[mode])
        ax.legend()
    _save(fig, path)


def plot(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes the PNGs; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for mode in ("open", "closed"):
        levels = [lv for lv in report["levels"] if lv["mode"] == mode]
        if not levels:
            continue
        for name, draw in (
            ("throughput", lambda p, lv=levels, m=mode: _throughput(lv, m, p)),
            ("latency", lambda p, lv=levels, m=mode: _latency(lv, m, report["config"]["slo_ms"], p)),
            ("queue_compute", lambda p, lv=levels, m=mode: _breakdown(lv, m, p)),
            ("fairness", lambda p, lv=levels, m=mode: _fairness(lv, m, p)),
        ):
            path = out_dir / f"{mode}_{name}.png"
            draw(path)
            paths.append(str(path))
    return paths
