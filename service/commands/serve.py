"""`diffplex serve`: the API under uvicorn. With no environment it serves the embedded shapes backbone
(PyTorch) with the LocalStore in `.work/data` on 127.0.0.1:8000; `DIFFPLEX_*` variables configure the rest
(service/core/settings.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from service.core.settings import Settings

GRACEFUL_SHUTDOWN_S = 150  # above the app's drain timeout: accepted requests finish before the exit


def configuration_error(settings: Settings) -> str | None:
    """What keeps these settings from starting (shared with `diffplex worker`), or None."""
    if settings.backend == "pytorch" and not (settings.model_dir / "model_index.json").exists():
        return (
            f"no diffusers pipeline at {settings.model_dir}: train the default backbone "
            "(make train-backbone) or set DIFFPLEX_MODEL_DIR"
        )
    if settings.backend != "pytorch" and settings.export_dir is None:
        return f"the {settings.backend} backend needs DIFFPLEX_EXPORT_DIR (diffplex export)"
    if settings.role == "worker" and not settings.redis_url:
        return "workers take jobs from the Redis job stream: set DIFFPLEX_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
    if settings.role == "api" and not settings.redis_url:
        return 'DIFFPLEX_ROLE=api enqueues jobs for workers in Redis: set DIFFPLEX_REDIS_URL, or use role "all"'
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffplex serve", description=__doc__)
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1, DIFFPLEX_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000, DIFFPLEX_PORT)")
    parser.add_argument("--log-level", help="debug, info, warning... (DIFFPLEX_LOG_LEVEL)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    if settings.role == "worker":
        print(
            "diffplex serve: DIFFPLEX_ROLE=worker is `diffplex worker`; serve runs roles all and api", file=sys.stderr
        )
        return 2

    if problem := configuration_error(settings):
        print(f"diffplex serve: {problem}", file=sys.stderr)
        return 2

    from service.api import create_app
    from service.boot.http_server import uvicorn_options
    from service.core.logs import configure_logging

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging, configured above
        access_log=False,  # the request middleware logs each request with its id
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=settings.keep_alive_s,
        **uvicorn_options(settings),  # connection cap, request head size and deadline
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
