"""The report files from known levels: JSON, Markdown tables, PNG plots, the BENCHMARKS.md section."""

from __future__ import annotations

import json
from pathlib import Path

from service.bench.report import update_section
from service.loadtest import Sample, plots, summarise
from service.loadtest import report as reports


def _level(mode: str, offered: float, latency: float) -> dict:
    timings = [{"queue_s": latency / 4, "total_s": latency * 0.9}]
    samples = [Sample(t, "plain", 0.0, latency, 200, 1, timings=timings) for t in ("a", "a", "b")]
    samples.append(Sample("b", "plain", 0.0, 0.01, 429, error="rate limited"))
    return summarise(
        samples, mode=mode, offered=offered, duration_s=2, wall_s=2, slo_s=1, weights={"a": 2, "b": 1}, unet_rows=40
    )


def _report() -> dict:
    return {
        "command": "diffplex loadtest --url http://x --workload w.yaml --rate 1,2 --concurrency 2",
        "machine": "x86_64 Linux, test CPU, 2 CPU cores",
        "config": {"url": "http://x", "arrival": "gamma", "cv": 2.0, "seed": 0, "duration_s": 2, "slo_ms": 1000},
        "workload": {
            "path": "w.yaml",
            "name": "w",
            "tenants": [{"name": "a", "weight": 2}, {"name": "b", "weight": 1}],
        },
        "server": {"backend": "pytorch"},
        "levels": [_level("open", 1, 0.5), _level("open", 2, 1.5), _level("closed", 2, 0.8)],
        "aborted": None,
    }


def test_report_files(tmp_path: Path) -> None:
    report = _report()
    paths = plots.plot(report, tmp_path)
    reports.write(report, tmp_path, paths)
    assert len(paths) == 8 and all(Path(p).read_bytes().startswith(b"\x89PNG") for p in paths)
    assert json.loads((tmp_path / "report.json").read_text())["levels"][0]["sent"] == 4
    markdown = (tmp_path / "report.md").read_text()
    assert "gamma, CV 2" in markdown and "a (weight 2), b (weight 1)" in markdown
    # offered 1 req/s: 3 of 4 answered in 0.5 s over 2 s -> 1.50 images/s, 40 rows / 2 s, 75% within the SLO
    assert "| 1 | 4 | 3 | 1 | 1.50 | 20.00 | 500 | 500 | 500 | 125 | 325 | 50 | 1.50 | 75% | 1.000 |" in markdown
    assert "| 2 | 4 | 3 | 1 | 1.50 | 20.00 | 1500 |" in markdown and "| 0.00 | 0% |" in markdown  # over the SLO
    assert "- open 1: 429 x1" in markdown and "![open_latency](open_latency.png)" in markdown

    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nother text\n")
    update_section(benchmarks, "loadtest", reports.benchmarks_section(report, tmp_path))
    update_section(benchmarks, "loadtest", reports.benchmarks_section(report, tmp_path))  # replaced, not appended
    text = benchmarks.read_text()
    assert text.count("<!-- bench:loadtest -->") == 1 and "other text" in text and report["command"] in text
