from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter, load_adapter_file, vpt_to_bytes, write_vpt
from adapters.formats.caps import ReadCaps
from adapters.formats.safetensors_io import read_header
from adapters.spec import BackboneSpec
from adapters.types import VPTAdapter
from tests.adapters.builders import random_vpt, safetensors_bytes


@pytest.mark.parametrize("depth", ["shallow", "deep"])
def test_round_trip(spec: BackboneSpec, depth: str, tmp_path: Path) -> None:
    adapter = random_vpt(spec, depth, tokens=3, seed=0)
    write_vpt(adapter, tmp_path / "v.safetensors")
    again = load_adapter_file(tmp_path / "v.safetensors")
    assert isinstance(again, VPTAdapter)
    assert (again.depth, again.num_tokens, again.backbone_fingerprint) == (depth, 3, spec.fingerprint)
    assert len(again.tokens) == (1 if depth == "shallow" else 4)
    assert all(torch.equal(a, b) for a, b in zip(again.tokens, adapter.tokens, strict=True))
    assert again.digest == adapter.digest


def test_metadata_is_written(spec: BackboneSpec) -> None:
    header = read_header(vpt_to_bytes(random_vpt(spec, "deep", 2, 0)), ReadCaps())
    assert header.metadata == {
        "kind": "vpt",
        "format_version": "2",
        "depth": "deep",
        "tokens": "2",
        "backbone_fingerprint": spec.fingerprint,
    }
    assert list(header.tensors) == ["vpt.0", "vpt.1", "vpt.2", "vpt.3"]


def meta(**changes: str) -> dict[str, str]:
    return {"kind": "vpt", "format_version": "2", "depth": "deep", "tokens": "2", "backbone_fingerprint": "f"} | changes


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        ({"vpt.0": torch.ones(2, 8)}, meta(format_version="7"), "format_version=2"),
        ({"vpt.0": torch.ones(2, 8)}, meta(format_version="1"), "diffplex adapters convert-vpt"),
        ({"vpt.0": torch.ones(2, 8)}, meta(depth="medium"), "shallow' or 'deep"),
        ({"vpt.0": torch.ones(2, 8)}, meta(backbone_fingerprint=""), "backbone_fingerprint"),
        ({"vpt.0": torch.ones(2, 8), "vpt.2": torch.ones(2, 8)}, meta(), "without gaps"),
        ({"vpt.0": torch.ones(2, 8), "vpt.1": torch.ones(2, 8)}, meta(depth="shallow"), "only vpt.0"),
        ({"vpt.0": torch.ones(3, 8)}, meta(), "P = tokens = '2'"),
        ({"vpt.0": torch.ones(2, 8), "other": torch.ones(1)}, meta(), "other than vpt"),
    ],
)
def test_malformed(tensors: dict, metadata: dict, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        load_adapter(safetensors_bytes(tensors, metadata))
