"""A single file converted once: the next call (the next start, another replica) finds the directory by the same
key; a changed file or other settings convert again; a crash leaves nothing that is taken for a conversion."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from export import single_file_cache
from export.errors import ExportError
from export.single_file_cache import cache_key, converted_pipeline


@pytest.fixture
def sd1_file(tiny_single_files: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy: these tests change its mtime."""
    return Path(shutil.copy(tiny_single_files["sd1.safetensors"], tmp_path / "my model.safetensors"))


def test_a_file_is_converted_once_and_reused(
    sd1_file: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    first = converted_pipeline(sd1_file, tmp_path / "cache", config_dir=tiny_model_dir, progress=lines.append)
    assert first.parent == tmp_path / "cache" and first.name.startswith("my_model-")
    assert (first / "model_index.json").is_file() and any("converting" in line for line in lines)

    def no_conversion(*_: object, **__: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(single_file_cache, "convert_single_file", no_conversion)
    lines.clear()
    assert converted_pipeline(sd1_file, tmp_path / "cache", config_dir=tiny_model_dir, progress=lines.append) == first
    assert lines == [f"using {first}, converted earlier from {sd1_file}"]
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == [first.name]


def test_the_key_follows_the_file_and_the_settings(sd1_file: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    key = cache_key(sd1_file, tiny_model_dir)
    assert cache_key(sd1_file, tiny_model_dir) == key
    assert cache_key(sd1_file) != key  # the shipped configs
    assert cache_key(sd1_file, tiny_model_dir, "v_prediction") != key
    stat = sd1_file.stat()
    os.utime(sd1_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_key(sd1_file, tiny_model_dir) != key  # touched: perhaps rewritten
    renamed = sd1_file.rename(tmp_path / "other.safetensors")
    assert cache_key(renamed, tiny_model_dir).startswith("other-")


def test_a_crash_mid_conversion_leaves_nothing_to_reuse(
    sd1_file: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    target = cache / cache_key(sd1_file, tiny_model_dir)
    cache.mkdir()
    stale = cache / f".{target.name}.tmp-deadbeef"  # what a killed conversion leaves
    (stale / "unet").mkdir(parents=True)
    real = single_file_cache.convert_single_file

    def crashing(*_: object, **__: object) -> None:
        raise ExportError("interrupted")

    monkeypatch.setattr(single_file_cache, "convert_single_file", crashing)
    with pytest.raises(ExportError, match="interrupted"):
        converted_pipeline(sd1_file, cache, config_dir=tiny_model_dir)
    assert not target.exists() and not stale.exists()  # swept under the lock
    monkeypatch.setattr(single_file_cache, "convert_single_file", real)
    assert converted_pipeline(sd1_file, cache, config_dir=tiny_model_dir) == target
    assert not list(cache.glob(".*.tmp-*"))


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        converted_pipeline(tmp_path / "gone.safetensors", tmp_path / "cache")
