"""DIFFPLEX_MODEL_DIR naming a single-file checkpoint: converted once into DIFFPLEX_DATA_DIR/models, reached alike
by the engine and by an API replica's shape-only load, and served with the images of the pipeline it was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.boot.model import validation_info
from service.boot.model_source import served_model_dir
from service.commands.serve import configuration_error
from service.core.settings import Settings
from tests.service.boot.test_model_variants import generate


def test_the_engine_and_an_api_replica_reach_the_same_conversion(
    tiny_single_files: dict[str, Path], tiny_sd2_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings(
        model_dir=tiny_single_files["sd2.safetensors"],
        model_config_dir=tiny_sd2_model_dirs["epsilon"],
        model_prediction_type="v_prediction",
        data_dir=tmp_path / "data",
    )
    converted = served_model_dir(settings)
    assert converted.parent == tmp_path / "data" / "models" and (converted / "model_index.json").is_file()
    api = validation_info(settings.model_copy(update={"role": "api"}))
    assert api.tokenizer_dir == converted / "tokenizer"  # the same directory, converted once
    assert api.scheduler_config["prediction_type"] == "v_prediction"
    assert served_model_dir(settings) == converted
    # The weights a worker loads from it are the file's: the API replica's fingerprint matches the original's.
    original = validation_info(settings.model_copy(update={"model_dir": tiny_sd2_model_dirs["v_prediction"]}))
    assert api.spec.fingerprint == original.spec.fingerprint
    assert torch.equal(api.token_embedding, original.token_embedding)


def test_a_pipeline_directory_is_served_as_it_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=tiny_model_dir, data_dir=tmp_path)
    assert served_model_dir(settings) == tiny_model_dir and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_dir": "missing.safetensors"}, "no checkpoint file at missing.safetensors (DIFFPLEX_MODEL_DIR)"),
        ({"model_prediction_type": "epsilon"}, "DIFFPLEX_MODEL_PREDICTION_TYPE apply to a single-file"),
        ({"model_config_dir": "configs"}, "DIFFPLEX_MODEL_CONFIG_DIR apply to a single-file"),
    ],
)
def test_single_file_settings_are_checked_before_start(
    tiny_model_dir: Path, settings: dict, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    problem = configuration_error(Settings(**{"model_dir": tiny_model_dir, **settings}))
    assert problem is not None and message in problem


def test_serve_takes_the_model_as_an_option(tmp_path: Path) -> None:
    from tests.service.commands.test_serve import run

    result = run("serve", "--model", str(tmp_path / "model.ckpt"), data_dir=tmp_path)
    assert result.returncode == 2
    assert f"no checkpoint file at {tmp_path / 'model.ckpt'} (DIFFPLEX_MODEL_DIR)" in result.stderr


def test_a_server_on_a_single_file_serves_its_images(
    tiny_single_files: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    served = generate(
        tiny_single_files["sd1.safetensors"], tmp_path / "file", DIFFPLEX_MODEL_CONFIG_DIR=str(tiny_model_dir)
    )
    expected = generate(tiny_model_dir, tmp_path / "dir")
    assert len(served) == len(expected) == 2
    for image, reference in zip(served, expected, strict=True):
        assert np.array_equal(image, reference)
    (converted,) = [p for p in (tmp_path / "file" / "data" / "models").iterdir() if not p.name.startswith(".")]
    assert converted.name.startswith("sd1-") and (converted / "model_index.json").is_file()
    log = (tmp_path / "file" / "server.log").read_text()
    assert "converting" in log and str(converted) in log
