"""A single-file checkpoint (`model.safetensors` / `.ckpt` in the original LDM / A1111 key layout) -> a diffusers
pipeline directory that `export.backbone.load_backbone` loads like any other, offline.

The key renaming is diffusers' own (`StableDiffusionPipeline.from_single_file`); what diffplex adds is what that
call would otherwise fetch from the Hub or guess: the family is detected here (export/checkpoint_family.py), the
configs come from the shipped ones (export/single_file_configs/) or the caller's directory, the prediction type
may be given, and the directory appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.backbone import check_layout
from export.checkpoint_family import CONFIG_HINT, PredictionType, check_shipped_config, detect_family
from export.checkpoint_file import MAX_CKPT_BYTES, read_checkpoint_keys
from export.errors import ExportError
from export.shipped_configs import SHIPPED, materialize_config

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Conversion:
    out_dir: Path
    family: str  # "SD-1.x", "SD-2.x"
    prediction_type: str  # what the written scheduler config says
    prediction_source: str  # "given", "inferred" (shipped configs) or "from the config" (the caller's)
    config: str  # the shipped config's name and source repository, or the caller's directory

    def to_dict(self) -> dict[str, str]:
        return {
            "out": str(self.out_dir),
            "family": self.family,
            "prediction_type": self.prediction_type,
            "prediction_source": self.prediction_source,
            "config": self.config,
        }


def _scheduler(config_dir: Path, prediction_type: PredictionType | None) -> Any:
    """The config directory's scheduler, with the caller's prediction type when given (a checkpoint cannot say it:
    passing diffusers' legacy `prediction_type=` instead would also replace the configured betas)."""
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    cls = getattr(diffusers, str(config.get("_class_name")), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ExportError(f"{config_dir}/scheduler names no diffusers scheduler ({config.get('_class_name')!r})")
    return cls.from_config(config, **({"prediction_type": prediction_type} if prediction_type else {}))


def _missing_weights(pipe: Any) -> list[str]:
    """Parameters the checkpoint did not fill: diffusers leaves them on the meta device instead of failing."""
    missing = []
    for component in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, component)
        tensors = [*module.named_parameters(), *module.named_buffers()]
        missing += [f"{component}.{name}" for name, t in tensors if t.device.type == "meta"]
    return missing


def _load(path: Path, config_dir: Path, prediction_type: PredictionType | None, hint: str) -> Any:
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        # A local `config` directory and local_files_only: nothing is looked up on the Hub. A .ckpt is read by
        # diffusers with torch.load(weights_only=True) (pinned by tests), after read_checkpoint_keys refused
        # anything else.
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config_dir),
            local_files_only=True,
            scheduler=_scheduler(config_dir, prediction_type),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except (SingleFileComponentError, ValueError, RuntimeError, OSError, KeyError) as e:
        if "meta tensor" in str(e):  # a U-Net or VAE weight missing: diffusers fails moving the empty module
            raise ExportError(f"{path.name} lacks weights the configs ask for (diffusers: {e}); {hint}") from e
        raise ExportError(
            f"diffusers could not convert {path.name} with the configs in {config_dir}: {e}; {hint}"
        ) from e
    if missing := _missing_weights(pipe):  # a text encoder weight missing: diffusers leaves it empty
        raise ExportError(
            f"{path.name} lacks {len(missing)} weight(s) the configs ask for (e.g. {', '.join(missing[:3])}); {hint}"
        )
    return pipe


def convert_single_file(
    path: Path,
    out_dir: Path,
    *,
    config_dir: Path | None = None,
    prediction_type: PredictionType | None = None,
    progress: Progress = lambda _: None,
    max_ckpt_bytes: int = MAX_CKPT_BYTES,
) -> Conversion:
    """Write `path` as a diffusers pipeline directory (safetensors weights, as the checkpoint stores them) at
    `out_dir`, which must not exist or be empty. `config_dir`: a diffusers-layout directory whose configs and
    tokenizer describe the checkpoint (None: the shipped configs of the detected family). `prediction_type`: what
    the model predicts, when the configs' is wrong (written into the scheduler config; a checkpoint cannot say it).
    ExportError says what is wrong and what to give instead."""
    path, out_dir = Path(path), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an empty directory: choose a new output directory")
    keys = read_checkpoint_keys(path, max_ckpt_bytes)  # a .ckpt is refused here unless it holds only tensors
    family = detect_family(keys, prediction_type)
    if config_dir is None:
        check_shipped_config(keys, family)
        described, hint = f"shipped {family.shipped_config}: {SHIPPED[family.shipped_config]}", CONFIG_HINT
    else:
        check_layout(Path(config_dir))
        described, hint = str(config_dir), "check that those configs describe this checkpoint"
    progress(f"{path.name}: {family.label}; converting with the configs of {described}")
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="diffplex-config-") as scratch:
            configs = Path(config_dir) if config_dir else materialize_config(family.shipped_config, Path(scratch))
            pipe = _load(path, configs, prediction_type, hint)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            pipe.save_pretrained(staging, safe_serialization=True)
        # The directory appears whole: a crash before this line leaves only the hidden staging directory.
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = str(pipe.scheduler.config.get("prediction_type", "epsilon"))
    source = "given" if prediction_type else "inferred" if config_dir is None else "from the config"
    progress(f"wrote {out_dir} ({written}, {source})")
    return Conversion(out_dir, family.label, written, source, described)
