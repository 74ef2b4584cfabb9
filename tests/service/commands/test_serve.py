"""`diffplex tenants` on an embedded store, `diffplex serve` refusing to start without a model (saying which
setting pointed where), and the generated admin key file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.commands.serve import missing_pipeline
from service.commands.tenants import describe_store
from service.core.settings import Settings
from service.stores import LocalStore
from service.tenants.admin_key import resolve_admin_key


def run(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DIFFPLEX_DATA_DIR": str(data_dir), **env}
    environment.pop("DIFFPLEX_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service.commands.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def test_tenants_cli_creates_lists_and_deletes(tmp_path: Path) -> None:
    created = run("tenants", "create", "acme", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["api_key"]
    assert LocalStore(tmp_path).authenticate(key) == LocalStore(tmp_path).get_tenant("acme")
    listed = run("tenants", "list", data_dir=tmp_path)
    assert [json.loads(line)["tenant"] for line in listed.stdout.splitlines()] == ["acme"]
    again = run("tenants", "create", "acme", data_dir=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = run("tenants", "create", "Not OK", data_dir=tmp_path)
    assert bad.returncode == 2 and "not allowed" in bad.stderr
    assert run("tenants", "delete", "acme", data_dir=tmp_path).returncode == 0
    assert run("tenants", "delete", "acme", data_dir=tmp_path).returncode == 1


def test_tenants_cli_says_which_store_and_never_makes_one_unasked(tmp_path: Path) -> None:
    """Run from another directory, the relative default data dir would be a new, empty store whose keys the
    running server refuses: the command names the store and refuses to make one unless told to."""
    missing = tmp_path / "elsewhere" / "data"
    for args in (("create", "acme"), ("list",), ("delete", "acme")):
        refused = run("tenants", *args, data_dir=missing)
        assert refused.returncode == 2, refused.stderr
        assert f"there is no store at {missing}" in refused.stderr and "DIFFPLEX_DATA_DIR" in refused.stderr
    assert not missing.exists()
    created = run("tenants", "create", "acme", "--create-store", data_dir=missing)
    assert created.returncode == 0, created.stderr
    assert f"using the local store in {missing} (DIFFPLEX_DATA_DIR)" in created.stderr
    assert LocalStore(missing).get_tenant("acme") is not None
    redis = describe_store(Settings(redis_url="redis://:secret@127.0.0.1:1/3", redis_prefix="dpx"))
    assert redis == "the Redis store at redis://127.0.0.1:1/3, key prefix 'dpx' (DIFFPLEX_REDIS_URL)"


def test_serve_without_a_model_says_what_to_do(tmp_path: Path) -> None:
    result = run("serve", data_dir=tmp_path, DIFFPLEX_MODEL_DIR=str(tmp_path / "none"))
    assert result.returncode == 2
    # The operator chose that directory: the setting that pointed there and what is missing, not the default's
    # training recipe.
    assert f"{tmp_path / 'none'} (DIFFPLEX_MODEL_DIR): it does not exist" in result.stderr, result.stderr
    assert "make train-backbone" not in result.stderr
    (tmp_path / "empty").mkdir()
    assert "it has no model_index.json" in missing_pipeline(Settings(model_dir=tmp_path / "empty"))


def test_the_default_model_missing_points_at_its_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFPLEX_MODEL_DIR", raising=False)
    default = Settings()
    assert "model_dir" not in default.model_fields_set
    assert "make train-backbone" in missing_pipeline(default)


def test_embedded_mode_generates_a_private_admin_key_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=None, admin_key=None)
    key = resolve_admin_key(settings)
    path = tmp_path / "data" / "admin_key"
    assert path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_admin_key(settings) == key  # reused on restart
    assert resolve_admin_key(Settings(data_dir=tmp_path, admin_key="chosen")) == "chosen"
