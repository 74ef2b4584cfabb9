"""The export directory the suites run on: made from the model when missing, flagged when it predates a variant or
the LoRA banks' dynamic rank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from export.graphs import BASE_GRAPHS
from export.manifest import MANIFEST, is_lora_variant, load_manifest


def ensure_export(model_dir: Path, export_dir: Path, progress: Callable[[str], None]) -> None:
    """Export `model_dir` to `export_dir` unless an export is there. An export made before the U-Nets' LoRA-only
    variants still runs (those calls go to the banked graphs), but its figures price the older graphs: say so."""
    if not (Path(export_dir) / MANIFEST).exists():
        from export.exporter import ExportOptions, export_pipeline

        progress(f"no export at {export_dir}: exporting the model first")
        export_pipeline(ExportOptions(model_dir=model_dir, out_dir=export_dir), progress=progress)
        return
    manifest = load_manifest(export_dir)
    unets = [entry for name, entry in manifest.graphs.items() if name in BASE_GRAPHS]
    if manifest.vpt_tokens and not any(is_lora_variant(v) for entry in unets for v in entry.variants):
        progress(f"note: {export_dir} has no LoRA-only U-Nets (an older export); delete it to bench the current one")
    if manifest.fixed_lora_rank is not None:
        progress(
            f"note: {export_dir} takes LoRA banks of rank {manifest.fixed_lora_rank} only (an export made before the "
            "rank axis was dynamic); delete it to bench the current one"
        )
