"""Which weights variant a pipeline directory's components hold: the plain files, or only variant ones
(`unet/diffusion_pytorch_model.fp16.safetensors`, `text_encoder/model.fp16.safetensors`), as checkpoints
published in half precision ship. diffusers and transformers load those only when asked for `variant=`, and
fail with "no file named diffusion_pytorch_model.bin" when not: shared by the export and the service, so a
directory one of them loads the other loads too."""

from __future__ import annotations

import re
from pathlib import Path

from export.errors import ExportError

WEIGHTED_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")  # the last: SDXL's, where there is one
# The files `from_pretrained` loads without a variant: single, sharded (their index) or pickled.
_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
_PLAIN = re.compile(rf"^({'|'.join(_STEMS)})\.(safetensors|bin)(\.index\.json)?$")
# `<stem>.<variant>.<ext>`, a shard `<stem>.<variant>-00001-of-00002.<ext>`, an index
# `<stem>.<ext>.index.<variant>.json`.
_VARIANT = re.compile(
    rf"^(?:{'|'.join(_STEMS)})\."
    r"(?:(?P<v>\w+?)(?:-\d+-of-\d+)?\.(?:safetensors|bin)|(?:safetensors|bin)\.index\.(?P<i>\w+)\.json)$"
)


def has_plain_weights(component_dir: Path) -> bool:
    return any(_PLAIN.match(p.name) for p in component_dir.iterdir()) if component_dir.is_dir() else False


def variants_in(component_dir: Path) -> set[str]:
    """The variant names of a component's weight files (empty: none, or no such directory)."""
    if not component_dir.is_dir():
        return set()
    found = (_VARIANT.match(p.name) for p in component_dir.iterdir())
    return {m["v"] or m["i"] for m in found if m}


def component_variant(component_dir: Path, variant: str | None) -> str | None:
    """The `variant=` to load one component with. `variant` is the one asked for (None: detect): a component
    that holds it loads it, else its plain weights; asked for none, a component with no plain weights but
    exactly one variant loads that one."""
    found = variants_in(component_dir)
    if variant is not None:
        if variant in found:
            return variant
        if has_plain_weights(component_dir):
            return None
        listed = ", ".join(sorted(found)) or "none"
        raise ExportError(f"{component_dir} has no {variant!r} weights nor plain ones (variants found: {listed})")
    if has_plain_weights(component_dir) or not found:
        return None  # plain, or nothing at all: from_pretrained names what is missing
    if len(found) > 1:
        raise ExportError(
            f"{component_dir} holds weights of several variants ({', '.join(sorted(found))}) and no plain ones: "
            "choose one with DIFFPLEX_MODEL_VARIANT"
        )
    return found.pop()


def pipeline_variants(model_dir: Path, variant: str | None = None) -> dict[str, str | None]:
    """component -> the `variant=` to load it with, for the components the directory has that hold weights."""
    model_dir = Path(model_dir)
    return {c: component_variant(model_dir / c, variant) for c in WEIGHTED_COMPONENTS if (model_dir / c).is_dir()}
