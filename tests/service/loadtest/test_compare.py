"""`diffplex loadtest compare`: two run directories written by the load test's own report code from known
samples, so every figure in the comparison is known: the table, the ratio, the plots, the refusals, the exits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.loadtest import Sample, summarise
from service.loadtest import report as reports
from service.loadtest.cli import main
from service.loadtest.compare import compare, load_run, problems
from service.loadtest.compare_report import git_ignored

PORTS = {"continuous": 8010, "request": 8011}  # two servers: the default one, DIFFPLEX_ENGINE__BATCHING=request
SLO_S = 1.0
WALL_S = 2.0
# (mode, offered) -> each run's latencies (s) of four one-image requests; all answered, over WALL_S seconds
LATENCIES = {
    "continuous": {("open", 1): [0.2, 0.4, 0.6, 0.8], ("open", 2): [2.0] * 4, ("closed", 2): [0.25] * 4},
    "request": {("open", 1): [0.5, 0.5, 1.5, 1.5], ("open", 2): [0.5] * 4, ("closed", 2): [0.25] * 3 + [2.25]},
}


def _level(mode: str, offered: float, latencies: list[float]) -> dict[str, Any]:
    samples = [Sample("acme", "plain", 0.1 * i, s, 200, 1) for i, s in enumerate(latencies)]
    return summarise(
        samples, mode=mode, offered=offered, duration_s=WALL_S, wall_s=WALL_S, slo_s=SLO_S, weights={"acme": 1}
    )


def _report(name: str) -> dict[str, Any]:
    """What `diffplex loadtest` puts in report.json (cli._finish's fields around run()'s levels)."""
    return {
        "server": {"status": "ready", "backend": "onnxruntime-cpu", "load": 0},
        "tenants": {"acme": "acme-lt1"},
        "levels": [_level(mode, offered, lat) for (mode, offered), lat in LATENCIES[name].items()],
        "aborted": None,
        "command": f"diffplex loadtest --url http://127.0.0.1:{PORTS[name]} --rate 1,2 --concurrency 2 --out {name}",
        "machine": "x86_64 Linux, test CPU, 2 CPU cores",
        "started": 0.0,
        "config": {
            "url": f"http://127.0.0.1:{PORTS[name]}",
            "arrival": "poisson",
            "cv": 1.0,
            "seed": 7,
            "duration_s": WALL_S,
            "slo_ms": SLO_S * 1000,
            "rates": [1.0, 2.0],
            "concurrency": [2],
        },
        "workload": {"path": "w.yaml", "name": "w", "tenants": [{"name": "acme", "weight": 1}]},
    }


def _write(directory: Path, report: dict[str, Any]) -> Path:
    reports.write(report, directory, [])  # the load test's own writer: the format compare reads
    return directory


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return _write(tmp_path / "lt-continuous", _report("continuous")), _write(
        tmp_path / "lt-request", _report("request")
    )


def _compare(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main(["compare", *(str(a) for a in args)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_tables_ratios_and_plots(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    code, err = _compare(capsys, *runs, "--label-a", "continuous", "--label-b", "request", "--out", out)
    assert code == 0, err
    markdown = (out / "comparison.md").read_text()
    assert markdown.startswith("# Load test comparison: continuous vs request\n")
    assert "- A, **continuous**: `diffplex loadtest --url http://127.0.0.1:8010" in markdown
    assert "- B, **request**: `diffplex loadtest --url http://127.0.0.1:8011 " in markdown
    assert "arrivals poisson, seed 7; 2 s per level; end-to-end SLO 1000 ms" in markdown
    assert (
        "| req/s offered | goodput img/s continuous | goodput img/s request | goodput request / continuous |"
        in markdown
    )
    # 1 req/s: A 4 images in SLO / 2 s; B 2 of 4 within 1 s -> 1.00, half of A; p99 by linear interpolation
    assert "| 1 | 2.00 | 1.00 | 0.50x | 2.00 | 2.00 | 500 | 1000 | 794 | 1500 | 100% | 50% |" in markdown
    # 2 req/s: A answers everything after the SLO: goodput 0, so B/A is undefined, shown as "-"
    assert "| 2 | 0.00 | 2.00 | - | 2.00 | 2.00 | 2000 | 500 | 2000 | 500 | 0% | 100% |" in markdown
    assert "### Closed loop (concurrent users), SLO 1000 ms" in markdown
    assert "| 2 | 2.00 | 1.50 | 0.75x | 2.00 | 2.00 | 250 | 250 | 250 | 2190 | 100% | 75% |" in markdown

    data = json.loads((out / "comparison.json").read_text())
    assert [row["goodput_ratio_b_over_a"] for row in data["modes"]["open"]] == [pytest.approx(0.5), None]
    assert data["modes"]["closed"][0]["b"]["p99_ms"] == pytest.approx(2190)
    assert (data["a"]["label"], data["b"]["label"], data["shared"]["seed"]) == ("continuous", "request", 7)
    assert data["command"].startswith("diffplex loadtest compare ") and "--label-b request" in data["command"]

    pngs = ["closed_goodput.png", "closed_latency.png", "open_goodput.png", "open_latency.png"]
    assert sorted(data["plots"]) == pngs == sorted(p.name for p in out.glob("*.png"))
    assert all((out / p).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "![open_latency](open_latency.png)" in markdown


def test_labels_default_to_the_directory_names(runs: tuple[Path, Path], tmp_path: Path) -> None:
    assert main(["compare", str(runs[0]), str(runs[1] / "report.json"), "--out", str(tmp_path / "c")]) == 0
    assert "goodput lt-request / lt-continuous" in (tmp_path / "c" / "comparison.md").read_text()


def _config(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda report: report["config"].update({key: value})


def _drop_level(report: dict[str, Any]) -> None:
    report["levels"].pop(1)
    report["aborted"] = "every request of level 2 req/s failed"


def _rename_tenant(report: dict[str, Any]) -> None:
    report["workload"]["tenants"][0]["weight"] = 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_drop_level, "open-loop levels (req/s): continuous ran [1.0, 2.0], request ran [1.0]"),
        (_drop_level, "request stopped early: every request of level 2 req/s failed"),
        (_config("slo_ms", 5000.0), "SLO (ms): continuous 1000.0, request 5000.0"),
        (_config("seed", 8), "seed: continuous 7, request 8"),
        (_config("arrival", "gamma"), "arrival process: continuous poisson, request gamma"),
        (_rename_tenant, "workload (name, tenant weights)"),
    ],
)
def test_refuses_runs_of_different_loads(
    change: Callable[[dict[str, Any]], None], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path / "a", _report("continuous"))
    other = _report("request")
    change(other)
    b = _write(tmp_path / "b", other)
    code, err = _compare(capsys, a, b, "--label-a", "continuous", "--label-b", "request", "--out", tmp_path / "c")
    assert code == 2 and "did not run the same load" in err and reason in err, err
    assert not (tmp_path / "c").exists()


def test_the_same_load_has_no_problems(runs: tuple[Path, Path]) -> None:
    a, b = load_run(runs[0], "a"), load_run(runs[1], "b")
    assert problems(a, b) == [] and sorted(compare(a, b)["modes"]) == ["closed", "open"]


def test_bad_input(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps({"results": []}))
    (tmp_path / "no-slo").mkdir()
    (tmp_path / "no-slo" / "report.json").write_text(json.dumps(_report("request") | {"config": {"seed": 7}}))
    a, out = runs[0], tmp_path / "c"
    for b, message in [
        (tmp_path / "missing", "missing: no such directory"),
        (tmp_path / "empty", "empty: has no report.json"),
        (tmp_path / "broken", "not readable as JSON"),
        (tmp_path / "other", "not a `diffplex loadtest` report"),
        (tmp_path / "no-slo", "does not record its SLO (config.slo_ms)"),
    ]:
        code, err = _compare(capsys, a, b, "--out", out)
        assert code == 2 and message in err, err
    with pytest.raises(SystemExit) as exit:
        main(["compare", str(a), str(runs[1]), "--label-a", "x", "--label-b", "x"])
    assert exit.value.code == 2 and "both runs are labelled 'x'" in capsys.readouterr().err
    assert not out.exists()


def test_benchmarks_section(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nother text\n")
    args = [*runs, "--label-a", "continuous", "--label-b", "request", "--out", tmp_path / "results" / "batching"]
    for _ in range(2):  # the second run replaces the section
        assert _compare(capsys, *args, "--benchmarks", benchmarks)[0] == 0
    text = benchmarks.read_text()
    assert text.count("<!-- bench:loadtest-batching -->") == 1 and "other text" in text
    assert "## Load test comparison: continuous vs request (`diffplex loadtest compare`)" in text
    assert "| 1 | 2.00 | 1.00 | 0.50x |" in text
    assert "[results/batching/comparison.md](results/batching/comparison.md)" in text  # relative to the file


def test_benchmarks_link_outside_the_file_is_refused(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    benchmarks = tmp_path / "docs" / "BENCHMARKS.md"
    code, err = _compare(capsys, *runs, "--out", tmp_path / "c", "--benchmarks", benchmarks)
    assert code == 2 and "--out must be under" in err
    assert not (tmp_path / "c").exists() and not benchmarks.exists()  # refused before anything was written


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_ignored_paths_are_found() -> None:
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    assert git_ignored(root / ".work" / "loadtest-compare" / "comparison.md")  # .gitignore: .work/
    assert not git_ignored(root / "deploy" / "loadtest" / "results" / "batching" / "comparison.md")


def test_diffplex_dispatches_compare(tmp_path: Path) -> None:
    """Through the `diffplex` entry point, as a user types it; the plain `diffplex loadtest` parser still answers."""
    command = [sys.executable, "-m", "service.commands.cli", "loadtest"]
    done = subprocess.run(
        [*command, "compare", str(tmp_path / "x"), str(tmp_path / "y")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "x: no such directory" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*command, "--rate", "1"], capture_output=True, text=True)
    assert done.returncode == 2 and "--url" in done.stderr
