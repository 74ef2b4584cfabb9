"""Single-file checkpoints converted once and kept: `converted_pipeline(file, root)` is the diffusers directory of
`file` under `root`, converted on first use and found again on the next start (by the service, an API replica or
`diffplex export` alike: they compute the same key).

The key is the file's name, size and mtime, a hash of its header (tensor names, shapes and offsets, read in
milliseconds), and what the conversion was asked for (config directory, prediction type): change any of them and
the file converts again. A conversion is written into a hidden staging directory and renamed into place, under a
lock file, so a crash leaves no half directory and two processes never convert the same file at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from export.checkpoint_family import PredictionType
from export.checkpoint_file import header_digest
from export.errors import ExportError
from export.single_file import convert_single_file

# Bumped when a change here writes different directories from the same file, so that old conversions are redone.
CONVERSION_VERSION = 1
CACHE_SUBDIR = "models"  # under the service's data directory (DIFFPLEX_DATA_DIR)


def default_cache_root() -> Path:
    """Where `diffplex serve` keeps conversions with its default settings (DIFFPLEX_DATA_DIR, else .work/data), so
    that `diffplex export --model FILE` and the service convert a file once between them."""
    return Path(os.environ.get("DIFFPLEX_DATA_DIR") or ".work/data") / CACHE_SUBDIR


def _config_digest(config_dir: Path) -> str:
    """A config directory's identity: its config and tokenizer files (not weights it may also hold)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in config_dir.rglob("*") if p.suffix in (".json", ".txt") and p.is_file()):
        digest.update(str(file.relative_to(config_dir)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(path: Path, config_dir: Path | None = None, prediction_type: PredictionType | None = None) -> str:
    """The name of `path`'s converted directory: its file name, then 16 hex digits of everything that decides the
    conversion."""
    path = Path(path)
    stat = path.stat()
    identity = {
        "version": CONVERSION_VERSION,
        "name": path.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "header": header_digest(path),
        "config_dir": str(Path(config_dir).resolve()) if config_dir else None,
        "config": _config_digest(Path(config_dir)) if config_dir else None,
        "prediction_type": prediction_type,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:64] or "model"
    return f"{stem}-{digest}"


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock held while one process converts (others on the same filesystem wait, then reuse)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_pipeline(
    path: Path,
    cache_root: Path,
    *,
    config_dir: Path | None = None,
    prediction_type: PredictionType | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Path:
    """The diffusers pipeline directory of single-file checkpoint `path`, converted into `cache_root` unless an
    earlier run did. ExportError as `convert_single_file` raises it."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist or is not a file")
    target = Path(cache_root) / cache_key(path, config_dir, prediction_type)
    if (target / "model_index.json").is_file():
        progress(f"using {target}, converted earlier from {path}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / "model_index.json").is_file():  # converted by another process while this one waited
            progress(f"using {target}, converted from {path} by another process")
            return target
        # Holding the lock, nothing else writes this key: staging directories left by a crash are stale.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a directory without model_index.json: not ours to trust
            shutil.rmtree(target)
        progress(f"converting {path} into {target} (once: later starts reuse it)")
        convert_single_file(path, target, config_dir=config_dir, prediction_type=prediction_type, progress=progress)
    return target
