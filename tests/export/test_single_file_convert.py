"""Converting single-file checkpoints (built here in the LDM layout from the tiny pipelines): the written directory
loads unchanged and diffplex's images from it equal, pixel for pixel, those of the pipeline the file was made from
(SD-1, SD-2 epsilon and v-prediction); the prediction type may be given; a .ckpt is only ever read as weights;
failures leave nothing behind and say what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from export.backbone import load_backbone
from export.errors import ExportError
from export.single_file import convert_single_file
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.torch_runtime import TorchRuntime
from tests.export.ldm_layout import ldm_state_dict
from tests.service.engine.helpers import generate

PROMPT = "a red circle on a blue background"


def images(model_dir: Path) -> list[np.ndarray]:
    """Two guided images through diffplex's PyTorch runtime and engine (ddim and euler, different seeds)."""
    engine = Engine(TorchRuntime(model_dir, vpt_tokens=3), EngineSettings(max_rows=8))
    return generate(
        engine,
        GenerationRequest(PROMPT, seed=3, steps=3, guidance_scale=4.0, sampler="ddim"),
        GenerationRequest(PROMPT, seed=4, steps=3, guidance_scale=4.0, sampler="euler", negative_prompt="green"),
    )


def scheduler_prediction(model_dir: Path) -> str:
    return json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]


@pytest.mark.parametrize(
    ("file", "source"),
    [("sd1.safetensors", "sd1"), ("sd2.safetensors", "epsilon"), ("sd2.ckpt", "v_prediction")],
)
def test_converted_files_give_the_original_pipelines_images(
    tiny_single_files: dict[str, Path],
    tiny_model_dir: Path,
    tiny_sd2_model_dirs: dict[str, Path],
    tmp_path: Path,
    file: str,
    source: str,
) -> None:
    """The SD-2 file holds the weights both SD-2 pipelines share; the config directory gives the scheduler."""
    original = tiny_model_dir if source == "sd1" else tiny_sd2_model_dirs[source]
    conversion = convert_single_file(tiny_single_files[file], tmp_path / "converted", config_dir=original)
    assert conversion.out_dir == tmp_path / "converted"
    assert conversion.family == ("SD-1.x" if source == "sd1" else "SD-2.x")
    assert conversion.prediction_type == scheduler_prediction(original) == scheduler_prediction(conversion.out_dir)
    assert conversion.prediction_source == "from the config"
    load_backbone(conversion.out_dir)  # unchanged loader
    got, want = images(conversion.out_dir), images(original)
    for image, reference in zip(got, want, strict=True):
        assert np.array_equal(image, reference)  # 0/255: the same weights, losslessly renamed
    assert not np.array_equal(got[0], got[1])


def test_the_prediction_type_may_be_given(
    tiny_single_files: dict[str, Path], tiny_sd2_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """An SD-2 file converted with epsilon configs but told v-prediction is the v-prediction pipeline."""
    conversion = convert_single_file(
        tiny_single_files["sd2.safetensors"],
        tmp_path / "v",
        config_dir=tiny_sd2_model_dirs["epsilon"],
        prediction_type="v_prediction",
    )
    assert (conversion.prediction_type, conversion.prediction_source) == ("v_prediction", "given")
    assert scheduler_prediction(conversion.out_dir) == "v_prediction"
    assert load_backbone(conversion.out_dir).prediction_type == "v_prediction"
    written = json.loads((conversion.out_dir / "scheduler" / "scheduler_config.json").read_text())
    configured = json.loads((tiny_sd2_model_dirs["epsilon"] / "scheduler" / "scheduler_config.json").read_text())
    assert {k: v for k, v in written.items() if k != "prediction_type"} == {
        k: v for k, v in configured.items() if k != "prediction_type"
    }  # only the prediction type changed, not the betas
    got, epsilon = images(conversion.out_dir), images(tiny_sd2_model_dirs["epsilon"])
    for image, reference in zip(got, images(tiny_sd2_model_dirs["v_prediction"]), strict=True):
        assert np.array_equal(image, reference)
    assert not np.array_equal(got[0], epsilon[0])  # the prediction type does change the images


def test_a_ckpt_of_plain_tensors_converts(
    tiny_single_files: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    conversion = convert_single_file(tiny_single_files["sd1.ckpt"], tmp_path / "out", config_dir=tiny_model_dir)
    converted, original = load_backbone(conversion.out_dir), load_backbone(tiny_model_dir)
    for component in ("unet", "vae", "text_encoder"):
        got, want = getattr(converted, component).state_dict(), getattr(original, component).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), component


class _RunsCode:
    """A pickled object that would run a shell command when unpickled (the attack a .ckpt can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_ckpt_holding_objects_is_refused_without_running_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": ldm_state_dict(tiny_model_dir, "clip"), "callbacks": _RunsCode(marker)}, evil)
    with pytest.raises(ExportError, match="holds pickled Python objects other than tensors .*GLOBAL posix.system"):
        convert_single_file(evil, tmp_path / "out", config_dir=tiny_model_dir)
    assert not marker.exists() and not (tmp_path / "out").exists()
    # diffusers' own reader, which reads the file of an accepted .ckpt again, refuses it too (weights_only=True):
    # pinned, so a diffusers release that changed that fails here.
    from diffusers.models.model_loading_utils import load_state_dict

    with pytest.raises(OSError, match="Unable to load weights"):
        load_state_dict(str(evil))
    assert not marker.exists()


def test_a_ckpt_over_the_size_cap_is_refused(tiny_single_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="a pickled .ckpt is read whole into memory .* convert it to .safetensors"):
        convert_single_file(tiny_single_files["sd1.ckpt"], tmp_path / "out", max_ckpt_bytes=1024)


def test_without_a_config_the_shipped_one_must_fit(tiny_single_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not the published architecture .* give the model's own diffusers config"):
        convert_single_file(tiny_single_files["sd2.safetensors"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_configs_that_do_not_describe_the_file_are_refused(
    tiny_single_files: dict[str, Path], tiny_sd2_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="check that those configs describe this checkpoint"):
        convert_single_file(
            tiny_single_files["sd1.safetensors"], tmp_path / "out", config_dir=tiny_sd2_model_dirs["epsilon"]
        )
    with pytest.raises(ExportError, match="not a diffusers pipeline directory"):
        convert_single_file(tiny_single_files["sd1.safetensors"], tmp_path / "out", config_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no staging left


def test_an_interrupted_conversion_leaves_no_directory(
    tiny_single_files: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import StableDiffusionPipeline

    def half_written(self: StableDiffusionPipeline, directory: Path, **_: object) -> None:
        (Path(directory) / "unet").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(StableDiffusionPipeline, "save_pretrained", half_written)
    with pytest.raises(OSError, match="disk full"):
        convert_single_file(tiny_single_files["sd1.safetensors"], tmp_path / "out", config_dir=tiny_model_dir)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_not_overwritten(tiny_single_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="exists and is not an empty directory"):
        convert_single_file(tiny_single_files["sd1.safetensors"], tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "dropped",
    [
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "first_stage_model.decoder.mid.attn_1.q.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
    ],
)
def test_a_checkpoint_missing_weights_is_refused(tiny_model_dir: Path, tmp_path: Path, dropped: str) -> None:
    from safetensors.torch import save_file

    state = ldm_state_dict(tiny_model_dir, "clip")
    del state[dropped]
    save_file(state, tmp_path / "partial.safetensors")
    with pytest.raises(ExportError, match="partial.safetensors lacks .*weight"):
        convert_single_file(tmp_path / "partial.safetensors", tmp_path / "out", config_dir=tiny_model_dir)
    assert not (tmp_path / "out").exists()
