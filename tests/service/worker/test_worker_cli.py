"""`diffplex worker` and the roles refuse a configuration they cannot run, with the variable to set."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIFFPLEX_")} | env
    command = [sys.executable, "-m", "service.commands.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)


def test_worker_needs_redis() -> None:
    result = run("worker")
    assert result.returncode == 2 and "DIFFPLEX_REDIS_URL" in result.stderr, result.stderr


def test_api_role_needs_redis_and_serve_is_not_a_worker() -> None:
    result = run("serve", DIFFPLEX_ROLE="api")
    assert result.returncode == 2 and "DIFFPLEX_REDIS_URL" in result.stderr, result.stderr
    result = run("serve", DIFFPLEX_ROLE="worker")
    assert result.returncode == 2 and "diffplex worker" in result.stderr, result.stderr
