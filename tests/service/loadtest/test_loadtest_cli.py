"""`diffplex loadtest` end to end against a real `diffplex serve`, and its failures: a clear message and a
non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from service.loadtest.cli import main
from tests.service.api.server import ADMIN_KEY, Server, free_port
from tests.service.loadtest.conftest import STEPS


@pytest.fixture(autouse=True)
def _no_tenant_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIFFPLEX_KEY_ACME", "DIFFPLEX_KEY_GLOBEX", "DIFFPLEX_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_open_and_closed_loop_report(loadtest_server: Server, workload_file: Path, tmp_path: Path) -> None:
    out, benchmarks = tmp_path / "report", tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nkept\n")
    command = [sys.executable, "-m", "service.commands.cli", "loadtest", "--url", loadtest_server.url]
    command += ["--workload", str(workload_file), "--admin-key", ADMIN_KEY, "--rate", "2,4", "--concurrency", "2"]
    command += [
        "--duration",
        "3",
        "--seed",
        "1",
        "--slo-ms",
        "30000",
        "--out",
        str(out),
        "--benchmarks",
        str(benchmarks),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + loadtest_server.logs()

    report = json.loads((out / "report.json").read_text())
    assert ADMIN_KEY not in json.dumps(report) and "--admin-key ***" in report["command"]
    assert [(lv["mode"], lv["offered"]) for lv in report["levels"]] == [("open", 2), ("open", 4), ("closed", 2)]
    senders = set()
    for level in report["levels"]:
        assert level["sent"] == level["ok"] > 0 and level["failed"] == 0, level["errors"]
        tenants = level["tenants"]
        assert sum(t["sent"] for t in tenants.values()) == level["sent"]
        assert sum(t["images"] for t in tenants.values()) == level["images"] >= level["ok"]
        senders |= {name for name, t in tenants.items() if t["sent"]}
        # every image ran STEPS U-Net steps of 1 (unguided) or 2 (guided) rows; the server counted them
        assert level["images"] * STEPS <= level["unet_rows"] <= 2 * level["images"] * STEPS
        assert level["latency_ms"]["p50"] <= level["latency_ms"]["p99"]
        assert level["queue_ms"]["p50"] is not None and level["compute_ms"]["p50"] > 0
        assert level["goodput"]["slo_attainment"] == 1.0
        assert 0 < level["jain_weighted"] <= 1
    assert senders == {"acme", "globex"}
    markdown = (out / "report.md").read_text()
    assert "### Open loop" in markdown and "### Closed loop" in markdown and "### Per tenant" in markdown
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(
        f"{m}_{k}.png" for m in ("open", "closed") for k in ("throughput", "latency", "queue_compute", "fairness")
    )
    assert all((out / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    section = benchmarks.read_text()
    assert "kept" in section and "<!-- bench:loadtest -->" in section and "diffplex loadtest --url" in section

    listed = httpx.get(f"{loadtest_server.url}/v1/admin/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert not [t for t in listed.json()["data"] if t["tenant"].startswith(("acme-lt", "globex-lt"))]  # cleaned up


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_connection_refused(workload_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, err = _run(capsys, "--url", url, "--workload", str(workload_file), "--rate", "1", "--ready-wait", "1")
    assert code == 1 and "cannot reach the server" in err and "connection refused" in err


def test_a_wrong_admin_key(loadtest_server: Server, workload_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--url", loadtest_server.url, "--workload", str(workload_file), "--rate", "1", "--admin-key", "wrong")
    code, err = _run(capsys, *args)
    assert code == 1 and "the admin key was refused (403" in err


def test_no_key_at_all(loadtest_server: Server, workload_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "--url", loadtest_server.url, "--workload", str(workload_file), "--rate", "1")
    assert code == 1 and "set DIFFPLEX_KEY_ACME" in err


def test_every_request_refused(
    loadtest_server: Server, workload_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the probe, a workload the server refuses (steps over its limit) stops after the first level."""
    data = yaml.safe_load(workload_file.read_text())
    for entry in data["requests"]:
        entry["steps"] = 10_000
    for tenant in data["tenants"]:
        for adapter in tenant["adapters"]:
            adapter["file"] = str(workload_file.parent / adapter["file"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    base = ("--url", loadtest_server.url, "--workload", str(bad), "--admin-key", ADMIN_KEY, "--out", str(tmp_path))
    code, err = _run(capsys, *base, "--rate", "4,8", "--duration", "1", "--no-probe")
    assert code == 1 and "every request of level 4 req/s failed (400 x" in err and "steps" in err
    assert len(json.loads((tmp_path / "report.json").read_text())["levels"]) == 1
    code, err = _run(capsys, *base, "--rate", "4", "--duration", "1")
    assert code == 1 and "the probe request of 'plain'" in err and "(400)" in err
