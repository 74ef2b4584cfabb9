"""The diffusers-layout configs diffplex ships for single-file checkpoints (configs and tokenizer files only, never
weights): what `from_single_file(config=...)` reads where it would otherwise download a repository's configs."""

from __future__ import annotations

import shutil
from pathlib import Path

from export.clip_vocab import write_clip_tokenizer_files
from export.errors import ExportError

CONFIGS_DIR = Path(__file__).parent / "single_file_configs"

# name -> the published diffusers repository its JSON follows (the parameter counts are pinned by
# tests/export/test_single_file_configs.py).
SHIPPED: dict[str, str] = {
    "sd15": "runwayml/stable-diffusion-v1-5 (SD-1.x, epsilon, 512 px)",
    "sd21": "stabilityai/stable-diffusion-2-1 (SD-2.x, v-prediction, 768 px)",
    "sd21-base": "stabilityai/stable-diffusion-2-1-base (SD-2.x, epsilon, 512 px)",
}
# SDXL-base's configs (stabilityai/stable-diffusion-xl-base-1.0, 1024 px; held to its parameter counts by
# tests/export/test_sdxl_base_config.py): `diffplex bench sdxl` builds its random-weight model from them. Not a
# single-file config yet: SDXL checkpoints are still refused.
SDXL_BASE = "sdxl-base"


def materialize_config(name: str, out_dir: Path) -> Path:
    """Write shipped config `name` as a full diffusers config directory in `out_dir` (created): its JSON files, and
    the tokenizer's vocab.json / merges.txt built from CLIP's merge list."""
    source = CONFIGS_DIR / name
    if name not in (*SHIPPED, SDXL_BASE) or not source.is_dir():
        raise ExportError(f"no shipped config {name!r}; shipped: {', '.join((*SHIPPED, SDXL_BASE))}")
    shutil.copytree(source, out_dir, dirs_exist_ok=True)
    for tokenizer in ("tokenizer", "tokenizer_2"):  # SDXL's two share CLIP's vocabulary
        if (out_dir / tokenizer).is_dir():
            write_clip_tokenizer_files(out_dir / tokenizer)
    return out_dir
