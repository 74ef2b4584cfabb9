"""What the deployment files are checked against: the settings' environment names, the CLI's commands, the
routes each app serves, and the job stream's key."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def settings_env_names() -> set[str]:
    """Every DIFFPLEX_* variable Settings reads (nested groups as DIFFPLEX_GROUP__FIELD)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"DIFFPLEX_{name.upper()}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= {f"DIFFPLEX_{name.upper()}__{sub.upper()}" for sub in field.annotation.model_fields}
    return names


def route_paths(worker: bool) -> set[str]:
    """Paths the API app (or the worker's health app) serves, from its OpenAPI schema (building an app does not
    start its lifespan)."""
    from service.api import create_app
    from service.commands.worker import create_worker_app

    app = create_worker_app(Settings(role="worker")) if worker else create_app(Settings())
    return set(app.openapi()["paths"])


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
