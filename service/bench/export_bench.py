"""`diffplex bench export`: how long `export_pipeline` takes on the shipped model, per graph and stage."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from export.exporter import ExportOptions, export_pipeline
from service.bench.report import machine, shown_path, table


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    rounds: list[dict[str, float]] = []
    sizes: dict[str, int] = {}
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as out:
            options = ExportOptions(model_dir=args.model, out_dir=Path(out), fp16=args.fp16)
            export_pipeline(options, progress=lambda line, i=i: progress(f"round {i + 1}: {line}"))
            rounds.append(dict(options.timings))
            sizes = {p.name: p.stat().st_size for p in Path(out).iterdir() if p.is_file()}
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    return {
        "machine": machine(),
        "model": shown_path(args.model),
        "rounds": args.rounds,
        "fp16": args.fp16,
        "seconds": median,
        "bytes": sum(sizes.values()),
    }


def markdown(r: dict, command: str) -> str:
    seconds = r["seconds"]
    total = seconds["total"]
    graphs = sorted({k.split(".", 1)[1] for k in seconds if "." in k})
    rows = []
    for graph in graphs:
        trace, optimize = seconds.get(f"export.{graph}", 0.0), seconds.get(f"optimize.{graph}", 0.0)
        rows.append([graph, f"{trace:.1f}", f"{optimize:.1f}", f"{100 * (trace + optimize) / total:.0f}%"])
    staged = sum(seconds[k] for k in seconds if "." in k)
    rows.append(["loading, spec, fp16, host files, manifest", "", "", f"{100 * (total - staged) / total:.0f}%"])
    return "\n".join(
        [
            "## Export time (`diffplex bench export`)",
            "",
            f"Machine: {r['machine']}. `export_pipeline` on `{r['model']}` (fused-CFG and plain U-Net, banked and "
            f"adapter-free base, text encoder, VAE; ORT-optimized variants{', fp16 variants' if r['fp16'] else ''}), "
            f"median of {r['rounds']} round(s): **{total:.1f} s** total, {r['bytes'] / (1 << 20):.0f} MiB written. "
            f"Command: `{command}`.",
            "",
            table(["graph", "trace to ONNX s", "ORT optimize s", "share of total"], rows),
        ]
    )
