"""A private `redis-server` for fault tests: its own free port and directory, so stopping it never touches
the machine's shared Redis on 6379. Append-only with fsync on every write, as a deployment that must not
lose accepted jobs runs it: a SIGKILL loses nothing that was acknowledged. `freeze` / `thaw` stand for a
Redis that hangs (a stalled host, a partition) instead of refusing connections."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.service.api.server import free_port

READY_TIMEOUT_S = 30.0


class RedisProcess:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (deploy/ensure_redis.sh installs it)")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.05)
        finally:
            client.close()

    def freeze(self) -> None:
        """A hung Redis (SIGSTOP): the kernel still accepts connections and requests, nothing is answered."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: it answers again, the requests that waited meanwhile first."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown save (append-only fsync kept every acknowledged write)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
