"""The U-Nets' reduced variants: with every row in slot 0 (zero banks), the banked graph's output is the base
graph's, and with no VPT token in any row's slot it is the LoRA-only graph's, so a runtime may run those
calls on the smaller graphs without changing an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.packing import VPT_MASK
from export.graphs import BASE_GRAPHS
from export.manifest import Manifest
from export.ort_session import open_session
from export.parity import BATCH_TOLERANCE, relative_error
from export.random_inputs import Dims, random_inputs

ROWS = 3


def _run(export_dir: Path, file: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = open_session(export_dir / file, threads=1)
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]


def _feed(manifest: Manifest, name: str, seed: int, slot_rows: list[int]) -> dict[str, np.ndarray]:
    """Seeded inputs of the banked graph: slot 0 is zero, slots 1 and 2 hold random LoRA and VPT banks."""
    inputs, _ = manifest.graph_io(name)
    size = manifest.latent_size
    dims = Dims(ROWS, 3, size, size, manifest.spec.max_length, manifest.vae_scale_factor, rank=16)
    values = random_inputs(inputs, dims, seed=seed, slot_rows=slot_rows)
    return {spec.name: value.numpy() for spec, value in zip(inputs, values, strict=True)}


@pytest.mark.parametrize("name", BASE_GRAPHS)
def test_base_graph_equals_the_banked_graph_in_slot_0(tiny_export: tuple[Path, Manifest], name: str) -> None:
    out, manifest = tiny_export
    entry = manifest.graphs[name]
    slot0 = _feed(manifest, name, 5, [0] * ROWS)
    base = _run(out, entry.variants["base"], slot0)
    assert relative_error(base, _run(out, entry.file, slot0)) <= BATCH_TOLERANCE
    # The banks do act on rows in other slots (same seed: the same rows and banks), so the comparison above
    # could have failed.
    adapted = _run(out, entry.file, _feed(manifest, name, 5, [1, 2, 1]))
    assert relative_error(adapted, base) > 1e-3


@pytest.mark.parametrize("name", BASE_GRAPHS)
def test_lora_graph_equals_the_banked_graph_without_vpt_tokens(tiny_export: tuple[Path, Manifest], name: str) -> None:
    out, manifest = tiny_export
    entry = manifest.graphs[name]
    feed = _feed(manifest, name, 6, [1, 2, 0])
    without_vpt = {k: np.zeros_like(v) if k.startswith(VPT_MASK) else v for k, v in feed.items()}
    lora = _run(out, entry.variants["lora"], feed)  # takes the LoRA banks only
    assert relative_error(lora, _run(out, entry.file, without_vpt)) <= BATCH_TOLERANCE
    # With their tokens present the VPT banks act, so the comparison above could have failed.
    assert relative_error(lora, _run(out, entry.file, feed)) > 1e-3
