"""The pipeline directory a starting server loads: `DIFFPLEX_MODEL_DIR` itself, or, when it names a single-file
checkpoint (.safetensors / .ckpt), that file converted once into `DIFFPLEX_DATA_DIR/models` and reused on every
later start. Shared by the engine (roles all, worker) and the shape-only load of role "api", which reach the same
directory (export/single_file_cache.py keys it by the file and the settings, not by who asks)."""

from __future__ import annotations

import logging
from pathlib import Path

from export.checkpoint_file import is_single_file
from export.single_file_cache import CACHE_SUBDIR, converted_pipeline
from service.core.settings import Settings

log = logging.getLogger(__name__)


def single_file_settings_error(settings: Settings) -> str | None:
    """The single-file settings given without a single file (they would be silently ignored), or None."""
    given = [
        name
        for name, value in (
            ("DIFFPLEX_MODEL_PREDICTION_TYPE", settings.model_prediction_type),
            ("DIFFPLEX_MODEL_CONFIG_DIR", settings.model_config_dir),
        )
        if value is not None
    ]
    if given and not is_single_file(settings.model_dir):
        return (
            f"{' and '.join(given)} apply to a single-file DIFFPLEX_MODEL_DIR (.safetensors, .ckpt); the pipeline "
            f"directory {settings.model_dir} says its own in scheduler/ and its configs: unset them"
        )
    return None


def served_model_dir(settings: Settings) -> Path:
    """Blocking (minutes, once, for a large single file): the diffusers pipeline directory to load."""
    if settings.backend != "pytorch" or not is_single_file(settings.model_dir):
        return settings.model_dir
    return converted_pipeline(
        settings.model_dir,
        settings.data_dir / CACHE_SUBDIR,
        config_dir=settings.model_config_dir,
        prediction_type=settings.model_prediction_type,
        progress=lambda line: log.info(line, extra={"model": str(settings.model_dir)}),
    )
