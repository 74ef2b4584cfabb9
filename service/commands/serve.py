"""`diffplex serve`: the API under uvicorn. With no environment it serves the embedded shapes backbone
(PyTorch) with the LocalStore in `.work/data` on 127.0.0.1:8000; `DIFFPLEX_*` variables configure the rest
(service/core/settings.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from service.core.settings import Settings


def missing_pipeline(settings: Settings) -> str:
    """Why `settings.model_dir` is no pipeline, and what to do: the embedded backbone is trained, a directory
    someone chose is theirs to fix."""
    where = settings.model_dir
    if "model_dir" not in settings.model_fields_set:  # the embedded default: not trained in this checkout
        return (
            f"no diffusers pipeline at {where}: train the default backbone (make train-backbone) "
            "or set DIFFPLEX_MODEL_DIR"
        )
    missing = (
        "does not exist"
        if not where.exists()
        else "is not a directory"
        if not where.is_dir()
        else "has no model_index.json"
    )
    return (
        f"no diffusers pipeline at {where} (DIFFPLEX_MODEL_DIR): it {missing}; point DIFFPLEX_MODEL_DIR at a diffusers "
        "pipeline directory (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file "
        "SD-1.x/2.x checkpoint (.safetensors, .ckpt)"
    )


def configuration_error(settings: Settings) -> str | None:
    """What keeps these settings from starting (shared with `diffplex worker`), or None."""
    # Here, not at the top: they import torch, and `diffplex serve --help` should not wait for it.
    from export.checkpoint_file import is_single_file
    from service.boot.model_source import single_file_settings_error

    if settings.backend == "pytorch" and is_single_file(settings.model_dir):
        if not settings.model_dir.is_file():
            return f"no checkpoint file at {settings.model_dir} (DIFFPLEX_MODEL_DIR)"
    elif settings.backend == "pytorch" and not (settings.model_dir / "model_index.json").exists():
        return missing_pipeline(settings)
    if problem := single_file_settings_error(settings):
        return problem
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
    parser.add_argument(
        "--model",
        dest="model_dir",
        type=Path,
        help="diffusers pipeline directory or single-file checkpoint, .safetensors / .ckpt (DIFFPLEX_MODEL_DIR)",
    )
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
    from service.boot.run import run_server
    from service.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return run_server("serve", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    sys.exit(main())
