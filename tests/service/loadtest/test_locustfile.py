"""deploy/locustfile.py: locust's own runner, headless in a subprocess (locust monkey-patches the standard
library with gevent, which must not leak into the test process), against a real server whose tenants
`diffplex loadtest --setup-only` prepared."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from service.loadtest.cli import main
from tests.service.api.server import ADMIN_KEY, Server

ROOT = Path(__file__).resolve().parents[3]


def test_locust_users_run_the_workload(
    loadtest_server: Server, workload_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = ["--url", loadtest_server.url, "--workload", str(workload_file), "--admin-key", ADMIN_KEY, "--setup-only"]
    assert main(setup) == 0
    keys = dict(shlex.split(line)[1].split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert set(keys) == {"DIFFPLEX_KEY_ACME", "DIFFPLEX_KEY_GLOBEX"}

    env = {**os.environ, **keys, "DIFFPLEX_WORKLOAD": str(workload_file)}
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "deploy" / "locustfile.py"), "--headless"]
    command += ["--users", "2", "--spawn-rate", "2", "--run-time", "4s", "--host", loadtest_server.url]
    command += ["--json-file", str(tmp_path / "stats"), "--skip-log", "--stop-timeout", "30"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert sum(s["num_requests"] for s in stats) > 0
    assert sum(s["num_failures"] for s in stats) == 0
    assert {s["name"].split()[0] for s in stats} <= {"acme", "globex"}


def test_locustfile_without_keys_says_how_to_get_them(workload_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFPLEX_KEY_")}
    env["DIFFPLEX_WORKLOAD"] = str(workload_file)
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "deploy" / "locustfile.py"), "--headless"]
    command += ["--run-time", "1s", "--host", "http://127.0.0.1:9"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "set DIFFPLEX_KEY_ACME, DIFFPLEX_KEY_GLOBEX" in result.stderr and "--setup-only" in result.stderr
