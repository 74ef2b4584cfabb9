"""The suites' export directory: made when missing, used as it is when there, flagged when it is older."""

from __future__ import annotations

from pathlib import Path

from export.manifest import MANIFEST, Manifest, is_lora_variant
from service.bench.export_dir import ensure_export
from tests.export.builders import without_variants
from tests.export.fixed_rank import with_fixed_rank


def test_a_missing_export_is_made(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    ensure_export(tiny_model_dir, tmp_path / "export", lines.append)
    assert (tmp_path / "export" / MANIFEST).is_file()
    assert lines[0].startswith("no export at")


def test_a_current_export_is_used_silently(tiny_model_dir: Path, tiny_export: tuple[Path, Manifest]) -> None:
    lines: list[str] = []
    ensure_export(tiny_model_dir, tiny_export[0], lines.append)
    assert lines == []


def test_an_export_without_lora_only_unets_is_flagged(
    tiny_model_dir: Path, tiny_export: tuple[Path, Manifest], tmp_path: Path
) -> None:
    older = without_variants(tiny_export[0], tmp_path / "older", is_lora_variant)
    lines: list[str] = []
    ensure_export(tiny_model_dir, older, lines.append)
    assert len(lines) == 1 and "no LoRA-only U-Nets" in lines[0]


def test_an_export_of_fixed_rank_is_flagged(
    tiny_model_dir: Path, tiny_export: tuple[Path, Manifest], tmp_path: Path
) -> None:
    lines: list[str] = []
    ensure_export(tiny_model_dir, with_fixed_rank(tiny_export[0], tmp_path / "older", 16), lines.append)
    assert len(lines) == 1 and "LoRA banks of rank 16 only" in lines[0]
