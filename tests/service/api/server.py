"""A real `diffplex serve` process on a free loopback port, over the tiny test backbone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ADMIN_KEY = "test-admin-key-0123456789"
READY_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    # the entry point run with `--port` (tests/service/worker runs service.commands.worker)
    module = "service.commands.serve"

    def __init__(self, model_dir: Path, data_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = {
            **os.environ,
            "DIFFPLEX_MODEL_DIR": str(model_dir),
            "DIFFPLEX_DATA_DIR": str(data_dir),
            "DIFFPLEX_ADMIN_KEY": ADMIN_KEY,
            "DIFFPLEX_ENGINE__LORA_RANK": "4",
            "DIFFPLEX_ENGINE__VPT_TOKENS": "3",
            "DIFFPLEX_ENGINE__THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **env,
        }
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port)],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the server was not ready in {READY_TIMEOUT_S}s:\n{self.logs()}")

    def log_events(self, message: str) -> list[dict]:
        """The JSON log lines with this message (what the process wrote before it died, too)."""
        if not self._log.closed:
            self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        events = []
        for line in lines:
            if line.startswith("{") and f'"message": "{message}"' in line:
                events.append(json.loads(line))
        return events

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        """SIGTERM (graceful: drains), as a process manager would."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextmanager
def running_server(model_dir: Path, root: Path, **env: str) -> Iterator[Server]:
    """A ready server whose store is `root/data` and log `root/server.log`, stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    server = Server(model_dir, root / "data", root / "server.log", **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
