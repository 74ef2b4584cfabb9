"""`diffplex adapters train` end to end on a tiny random pipeline: files that load, validate and log."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from adapters.cli import main as adapters_main
from adapters.formats import load_adapter_file
from adapters.spec import build_spec
from adapters.training.loop import load_frozen_pipeline
from adapters.validate import ExportLimits, validate
from service.commands import cli

FAST = ["--steps", "2", "--batch", "2", "--count", "8", "--threads", "1"]


def exit_code(argv: list[str]) -> int:
    """The code `diffplex` exits with: a returned int, or argparse's SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)


@pytest.mark.parametrize(
    ("kind", "extra", "loaded_kind"),
    [
        ("ti", ["--concept", "emblem"], "textual_inversion"),
        ("ti", ["--concept", "star"], "textual_inversion"),
        ("lora", ["--concept", "striped", "--rank", "4"], "lora"),
        ("vpt", ["--concept", "night", "--tokens", "2"], "vpt"),
        ("vpt", ["--concept", "night", "--depth", "shallow"], "vpt"),
    ],
)
def test_train_writes_an_adapter_that_loads_and_validates(
    pipeline_dir: Path, tmp_path: Path, kind: str, extra: list[str], loaded_kind: str
) -> None:
    out = tmp_path / f"{kind}.safetensors"
    assert cli.main(["adapters", "train", kind, *extra, "--out", str(out), "--model", str(pipeline_dir), *FAST]) == 0
    adapter = load_adapter_file(out)
    assert adapter.kind == loaded_kind
    pipe = load_frozen_pipeline(pipeline_dir)
    validate(adapter, build_spec(pipe.unet, pipe.text_encoder), ExportLimits(16, 8))
    assert "step 1 loss" in Path(f"{out}.log").read_text()


@pytest.mark.parametrize(("concept", "token"), [("emblem", "<emblem>"), ("star", "<star>")])
def test_ti_token_defaults_to_the_concepts(pipeline_dir: Path, tmp_path: Path, concept: str, token: str) -> None:
    out = tmp_path / "ti.safetensors"
    argv = ["train", "ti", "--concept", concept, "--out", str(out), "--model", str(pipeline_dir), *FAST]
    assert adapters_main(argv) == 0
    assert set(load_adapter_file(out).tokens) == {token}


def test_lora_trains_the_up_matrices(pipeline_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.safetensors"
    argv = ["train", "lora", "--concept", "striped", "--out", str(out), "--model", str(pipeline_dir), *FAST]
    assert adapters_main(argv) == 0
    layers = load_adapter_file(out).layers
    assert all(layer.rank == 8 for layer in layers.values())
    assert any(float(layer.up.abs().max()) > 0 for layer in layers.values())  # peft starts B at zero


def test_cross_attention_lora_covers_only_the_text_keys_and_values(pipeline_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.safetensors"
    argv = ["train", "lora", "--concept", "striped", "--lora-targets", "cross-attention", "--out", str(out)]
    assert adapters_main([*argv, "--model", str(pipeline_dir), *FAST]) == 0
    names = list(load_adapter_file(out).layers)
    assert names and all(name.endswith(("attn2.to_k", "attn2.to_v")) for name in names), names


def test_text_encoder_lora_trains_both_sides(pipeline_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.safetensors"
    argv = ["train", "lora", "--concept", "striped", "--train-text-encoder", "--out", str(out)]
    assert adapters_main([*argv, "--model", str(pipeline_dir), *FAST]) == 0
    layers = load_adapter_file(out).layers
    moved = {name.split(".")[0] for name, layer in layers.items() if float(layer.up.abs().max()) > 0}
    assert moved == {"unet", "text_encoder"}


def _image_folder(folder: Path, captions: dict[str, str | None]) -> Path:
    folder.mkdir()
    for stem, text in captions.items():
        Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / f"{stem}.png")
        if text is not None:
            (folder / f"{stem}.txt").write_text(text)
    return folder


def test_images_folder_trains(pipeline_dir: Path, tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "images", {"a": "a red <star>", "b": "a red <star> on a white background"})
    out = tmp_path / "ti.safetensors"
    argv = ["train", "ti", "--images", str(images), "--token", "<star>", "--out", str(out), *FAST]
    assert adapters_main([*argv, "--model", str(pipeline_dir)]) == 0
    assert set(load_adapter_file(out).tokens) == {"<star>"}


def test_ti_on_a_folder_needs_its_token(pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder's captions use whatever word they use; there is no concept to take one from."""
    images = _image_folder(tmp_path / "images", {"a": "a red <star>"})
    argv = ["adapters", "train", "ti", "--images", str(images), "--out", str(tmp_path / "x.safetensors")]
    assert exit_code([*argv, "--model", str(pipeline_dir)]) == 2
    assert "ti with --images needs --token" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("captions", "message"),
    [
        ({"a": "a red square", "b": None}, "b.png has no caption"),
        ({"a": "  \n"}, "a.txt is empty"),
        ({}, "no .png / .jpg images"),
    ],
)
def test_images_folder_problems_exit_2_with_a_message(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], captions: dict, message: str
) -> None:
    images = _image_folder(tmp_path / "images", captions)
    out = tmp_path / "lora.safetensors"
    argv = ["adapters", "train", "lora", "--images", str(images), "--out", str(out), "--model", str(pipeline_dir)]
    assert exit_code(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("a.txt", b"\xff\xfe\x00bad", "cannot be read as UTF-8"), ("a.png", b"not a png", "a.png cannot be read")],
)
def test_unreadable_caption_or_image_exits_2(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    images = _image_folder(tmp_path / "images", {"a": "a red square"})
    (images / name).write_bytes(content)
    argv = ["adapters", "train", "lora", "--images", str(images), "--out", str(tmp_path / "x.safetensors")]
    assert exit_code([*argv, "--model", str(pipeline_dir)]) == 2
    assert message in capsys.readouterr().err


def test_ti_token_missing_from_captions_exits_2(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _image_folder(tmp_path / "images", {"a": "a red square"})
    argv = ["adapters", "train", "ti", "--images", str(images), "--token", "<star>"]
    assert exit_code([*argv, "--out", str(tmp_path / "x.safetensors"), "--model", str(pipeline_dir)]) == 2
    assert "no caption contains the token '<star>'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["train", "dora", "--concept", "star", "--out", "x.safetensors"],
        ["train", "lora", "--concept", "star"],
        ["train", "lora", "--out", "x.safetensors"],
        ["train", "lora", "--concept", "star", "--images", ".", "--out", "x.safetensors"],
        ["train", "lora", "--concept", "moon", "--out", "x.safetensors"],
        ["train", "lora", "--concept", "star", "--out", "x.safetensors", "--steps", "many"],
        ["nonsense"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    assert exit_code(["adapters", *argv]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["lora", "--rank", "256"], "--rank must be 1 to 128"),
        (["vpt", "--tokens", "9"], "--tokens must be 1 to 8"),
        (["ti", "--steps", "0"], "--steps and --batch must be at least 1"),
        (["ti", "--token", "red"], "already a word of the tokenizer"),
        (["ti", "--token", "two words"], "without spaces"),
        (["ti", "--preserve"], "--preserve needs --concept and a lora or vpt"),
        (["vpt", "--lora-targets", "cross-attention"], "--lora-targets is a lora option"),
        (["ti", "--train-text-encoder"], "--train-text-encoder is a lora option"),
        (["lora", "--uncond-fraction", "1.5", "--preserve"], "--uncond-fraction must be in [0, 1)"),
        (["lora", "--uncond-fraction", "0.2"], "--uncond-fraction needs --preserve"),
    ],
)
def test_bad_values_exit_2_with_a_message(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "a.safetensors"
    argv = ["adapters", "train", extra[0], *FAST, *extra[1:], "--concept", "star", "--out", str(out)]
    assert exit_code([*argv, "--model", str(pipeline_dir)]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["adapters", "train", "ti", "--concept", "star", "--out", str(tmp_path / "a.safetensors")]
    assert exit_code([*argv, "--model", str(tmp_path / "nowhere")]) == 2
    assert "not a diffusers pipeline directory" in capsys.readouterr().err
