"""PNG plots of a comparison (matplotlib Agg, as plots.py): both runs on one axis per figure, one colour per run,
so where the two servers part (the knee of each) reads at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# plt from plots.py, which selects the Agg backend before pyplot loads (no display on a server)
from service.loadtest.plots import X_LABEL, _save, _values, plt

COLOURS = {"a": "tab:blue", "b": "tab:orange"}


def _goodput(comparison: dict[str, Any], mode: str, path: Path) -> None:
    rows = comparison["modes"][mode]
    x = [row["offered"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, colour in COLOURS.items():
        label = comparison[run]["label"]
        good = _values(rows, lambda row, r=run: row[r]["goodput_images_per_s"])
        done = _values(rows, lambda row, r=run: row[r]["images_per_s"])
        ax.plot(x, good, "o-", color=colour, label=f"{label}: goodput")
        # images/s, faint: the gap to goodput is what the server finished too late to count
        ax.plot(x, done, ":", color=colour, alpha=0.6, label=f"{label}: images/s")
    ax.set_xlabel(X_LABEL[mode])
    ax.set_ylabel("images/s")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(f"goodput (SLO {comparison['shared']['slo_ms']:g} ms) vs offered load")
    _save(fig, path)


def _latency(comparison: dict[str, Any], mode: str, path: Path) -> None:
    rows = comparison["modes"][mode]
    x = [row["offered"] for row in rows]
    slo = comparison["shared"]["slo_ms"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, colour in COLOURS.items():
        label = comparison[run]["label"]
        for q, style in (("p50", "o-"), ("p99", "s--")):
            values = _values(rows, lambda row, r=run, q=q: row[r][f"{q}_ms"])
            ax.plot(x, values, style, color=colour, label=f"{label}: {q}")
    ax.axhline(slo, color="grey", linestyle="--", label=f"SLO {slo:g} ms")
    ax.set_xlabel(X_LABEL[mode])
    ax.set_ylabel("end-to-end latency (ms)")
    ax.legend()
    ax.set_title("latency vs offered load")
    _save(fig, path)


def plot(comparison: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes `{mode}_goodput.png` and `{mode}_latency.png` for each mode both runs ran; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for mode in comparison["modes"]:
        for name, draw in (("goodput", _goodput), ("latency", _latency)):
            path = out_dir / f"{mode}_{name}.png"
            draw(comparison, mode, path)
            paths.append(str(path))
    return paths
