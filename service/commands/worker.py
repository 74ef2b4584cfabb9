"""`diffplex worker`: runs jobs from the Redis job stream on this machine's engine, with no public API.

Configured like `diffplex serve` (`DIFFPLEX_*`, service/core/settings.py); it needs `DIFFPLEX_REDIS_URL`. It serves
`/livez`, `/readyz` (model loaded and warmed, Redis answers, not draining) and `/metrics` on
`DIFFPLEX_WORKER__PORT` (8001) for probes and Prometheus. SIGTERM (or SIGINT) drains: no new jobs are taken,
jobs taken but not started are handed back to the stream, running ones finish and are acknowledged; then
the process exits 0. A SIGKILLed worker's jobs are reclaimed by the others after `DIFFPLEX_JOBS__STALE_AFTER_S`.

    DIFFPLEX_REDIS_URL=redis://127.0.0.1:6379/0 diffplex worker
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from service.commands.serve import configuration_error
from service.core.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown (the exit status then reads "killed"); a worker
    that drained cleanly exits 0, so an orchestrator can tell a drain from a crash."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def create_worker_app(settings: Settings) -> FastAPI:
    """The service's lifespan (store, model, engine, stream worker, drain) behind the probes only: a worker
    serves no tenant route."""
    from service.boot import probes
    from service.boot.lifespan import lifespan
    from service.core.error_handlers import install_error_handlers
    from service.core.metrics import Metrics

    app = FastAPI(title="diffplex worker", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(probes.router)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffplex worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", help="interface of the health port (default 127.0.0.1, DIFFPLEX_HOST)")
    parser.add_argument("--port", type=int, help="health and metrics port (default 8001, DIFFPLEX_WORKER__PORT)")
    parser.add_argument("--consumer", help="stream consumer name (default hostname-pid, DIFFPLEX_WORKER__CONSUMER)")
    parser.add_argument("--log-level", help="debug, info, warning... (DIFFPLEX_LOG_LEVEL)")
    parser.add_argument(
        "--model", type=Path, help="diffusers pipeline directory or single-file checkpoint (DIFFPLEX_MODEL_DIR)"
    )
    args = parser.parse_args(argv)
    given = {"host": args.host, "model_dir": args.model}
    settings = Settings(role="worker", **{k: v for k, v in given.items() if v is not None})
    if args.log_level:
        settings.log_level = args.log_level
    if args.port:
        settings.worker.port = args.port
    settings.worker.consumer = (
        args.consumer or settings.worker.consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    )
    if problem := configuration_error(settings):
        print(f"diffplex worker: {problem}", file=sys.stderr)
        return 2

    from service.boot.run import run_server
    from service.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return run_server("worker", create_worker_app(settings), settings, settings.worker.port, _Server)


if __name__ == "__main__":
    sys.exit(main())
