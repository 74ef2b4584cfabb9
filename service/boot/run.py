"""Running a server process to its end, shared by `diffplex serve` and `diffplex worker`: a model that cannot
load ends it (DIFFPLEX_EXIT_ON_LOAD_ERROR, the default) instead of leaving a server that answers `/livez` for
ever and 503 to every generation; the command then exits non-zero with the reason."""

from __future__ import annotations

import logging
import sys

import uvicorn
from fastapi import FastAPI

from service.boot.http_server import uvicorn_options
from service.boot.state import ServiceState
from service.core.settings import Settings

log = logging.getLogger(__name__)

LOAD_FAILED_EXIT = 1  # what an orchestrator sees: a crash, restarted with back-off and its log shown
STARTUP_FAILURE_EXIT = 3  # uvicorn.run's status when the server never started (port taken, lifespan failed)
GRACEFUL_SHUTDOWN_S = 150  # above the lifespan's drain timeout: accepted work finishes before the exit


def stop_on_load_error(app: FastAPI, state: ServiceState) -> None:
    """Called when the background load ends: after a failure, ask the server (the hook `serve` installs) to shut
    down gracefully. The lifespan's shutdown then runs as on SIGTERM; the exit status is set by `serve`."""
    if state.load_error is None or not state.settings.exit_on_load_error:
        return
    stop = getattr(app.state, "stop_server", None)
    if stop is None:  # an app run by hand (tests, another ASGI server): it keeps serving, /livez says why
        log.error("the model did not load; nothing stops this server", extra={"reason": state.load_error})
        return
    log.error("the model did not load: shutting down", extra={"reason": state.load_error})
    stop()


def serve(server: uvicorn.Server, app: FastAPI) -> str | None:
    """Run `server` (over `app`) until it exits; the reason the model did not load, if that ended it or happened
    while it ran, else None."""
    app.state.stop_server = lambda: setattr(server, "should_exit", True)  # uvicorn checks it every tick
    server.run()
    state: ServiceState | None = getattr(app.state, "service", None)
    return state.load_error if state is not None else None


def run_server(
    command: str, app: FastAPI, settings: Settings, port: int, server_class: type[uvicorn.Server] = uvicorn.Server
) -> int:
    """`diffplex serve` / `diffplex worker` (`command`) serving `app` on `port` until it exits; the exit status,
    with the reason on stderr when the model did not load."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,  # our JSON logging, configured by the command
        access_log=False,  # the request middleware logs each request with its id
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=settings.keep_alive_s,
        **uvicorn_options(settings),  # connection cap, request head size and deadline
    )
    server = server_class(config)
    if load_error := serve(server, app):
        print(f"diffplex {command}: {load_error}", file=sys.stderr)
        return LOAD_FAILED_EXIT
    return 0 if server.started else STARTUP_FAILURE_EXIT
