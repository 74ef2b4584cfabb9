"""`diffplex convert` (exit 0 with what it wrote, 2 with the reason) and `diffplex export --model FILE`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export.manifest import load_manifest
from service.commands.cli import main as diffplex


def test_convert_writes_a_pipeline_and_says_what_it_did(
    tiny_single_files: dict[str, Path],
    tiny_sd2_model_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    config = tiny_sd2_model_dirs["epsilon"]
    argv = ["convert", "--single-file", str(tiny_single_files["sd2.ckpt"]), "--out", str(tmp_path / "out")]
    assert diffplex([*argv, "--config", str(config), "--prediction-type", "v_prediction"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report == {
        "out": str(tmp_path / "out"),
        "family": "SD-2.x",
        "prediction_type": "v_prediction",
        "prediction_source": "given",
        "config": str(config),
    }
    assert "sd2.ckpt: SD-2.x" in captured.err
    assert (tmp_path / "out" / "model_index.json").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "not the published architecture"),  # the shipped configs do not fit the tiny model
        (["--config", "/nonexistent"], "is not a diffusers pipeline directory"),
    ],
)
def test_convert_refusals_exit_2_with_the_reason(
    tiny_single_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = ["convert", "--single-file", str(tiny_single_files["sd1.safetensors"]), "--out", str(tmp_path / "out")]
    assert diffplex([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffplex convert: ") and message in err
    assert not (tmp_path / "out").exists()


def test_convert_refuses_an_sdxl_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch
    from safetensors.torch import save_file

    xl = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.0.transformer.text_model.final_layer_norm.bias": torch.zeros(4)}, xl)
    assert diffplex(["convert", "--single-file", str(xl), "--out", str(tmp_path / "out")]) == 2
    assert "SDXL checkpoints are not served yet" in capsys.readouterr().err


def test_convert_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom service.commands.cli import main\ntry:\n    main(['convert', '--help'])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "--single-file FILE" in result.stdout
    assert result.stdout.strip().endswith("False")


def test_export_takes_a_single_file(
    tiny_single_files: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Converted into --converted-dir first (kept: the manifest's source, which --check reads, stays there)."""
    from export.cli import main as export

    argv = [
        *("--model", str(tiny_single_files["sd1.safetensors"]), "--config", str(tiny_model_dir)),
        *("--converted-dir", str(tmp_path / "converted"), "--out", str(tmp_path / "export")),
        *("--graphs", "text_encoder", "--no-optimize", "--vpt-tokens", "3"),
    ]
    assert export(argv) == 0, capsys.readouterr().err
    (converted,) = [p for p in (tmp_path / "converted").iterdir() if not p.name.startswith(".")]
    assert Path(load_manifest(tmp_path / "export").source) == converted.resolve()
    assert export(["--model", str(tiny_model_dir), "--prediction-type", "epsilon", "--out", str(tmp_path / "x")]) == 2
    assert "apply to a single-file --model" in capsys.readouterr().err
