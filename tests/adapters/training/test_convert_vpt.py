"""`diffplex adapters convert-vpt`: a format-1 file (tokens before norm1) becomes the format-2 file that
gives attn1 the same keys and values, and everything else exits 2 with a message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters.cli import main as adapters_main
from adapters.formats import load_adapter_file
from adapters.install import vpt_block_norms
from adapters.spec import build_spec
from adapters.training.loop import load_frozen_pipeline
from adapters.types import VPTAdapter


def write_format_1(path: Path, tokens: list[torch.Tensor], fingerprint: str, depth: str = "deep") -> None:
    meta = {"kind": "vpt", "format_version": "1", "depth": depth, "tokens": str(len(tokens[0]))}
    save_file(
        {f"vpt.{j}": t for j, t in enumerate(tokens)}, path, metadata=meta | {"backbone_fingerprint": fingerprint}
    )


def test_converts_tokens_to_their_norm1(pipeline_dir: Path, tmp_path: Path) -> None:
    pipe = load_frozen_pipeline(pipeline_dir)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    g = torch.Generator().manual_seed(0)
    old = [torch.randn(3, d, generator=g) * 4 + 1 for d in spec.vpt_dims]
    write_format_1(tmp_path / "old.safetensors", old, spec.fingerprint)
    with pytest.raises(ValueError, match="convert-vpt"):  # the server refuses the old file, naming the command
        load_adapter_file(tmp_path / "old.safetensors")

    argv = ["convert-vpt", "--file", str(tmp_path / "old.safetensors"), "--out", str(tmp_path / "new.safetensors")]
    assert adapters_main([*argv, "--model", str(pipeline_dir)]) == 0
    new = load_adapter_file(tmp_path / "new.safetensors")
    assert isinstance(new, VPTAdapter) and (new.depth, new.num_tokens) == ("deep", 3)
    for j, norm in enumerate(vpt_block_norms(pipe.unet, spec, len(spec.vpt_blocks))):
        with torch.no_grad():
            torch.testing.assert_close(new.tokens[j], norm(old[j]))


def test_refuses_what_it_cannot_convert(pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pipe = load_frozen_pipeline(pipeline_dir)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    write_format_1(tmp_path / "other.safetensors", [torch.ones(2, spec.vpt_dims[0])], "another-backbone", "shallow")
    out = str(tmp_path / "new.safetensors")
    model = ["--model", str(pipeline_dir)]
    assert adapters_main(["convert-vpt", "--file", str(tmp_path / "other.safetensors"), "--out", out, *model]) == 2
    assert "convert it with the backbone it was trained on" in capsys.readouterr().err
    wrong_dims = [torch.ones(2, d + 1) for d in spec.vpt_dims]  # the norm1 would fail on these, not the converter
    write_format_1(tmp_path / "dims.safetensors", wrong_dims, spec.fingerprint)
    assert adapters_main(["convert-vpt", "--file", str(tmp_path / "dims.safetensors"), "--out", out, *model]) == 2
    assert "block 0 needs [2, " in capsys.readouterr().err
    assert adapters_main(["convert-vpt", "--file", str(tmp_path / "missing.safetensors"), "--out", out]) == 2
    assert "no such file" in capsys.readouterr().err
    current = tmp_path / "current.safetensors"
    save_file(
        {"vpt.0": torch.ones(2, 8)},
        current,
        metadata={"kind": "vpt", "format_version": "2", "depth": "shallow", "tokens": "2", "backbone_fingerprint": "f"},
    )
    assert adapters_main(["convert-vpt", "--file", str(current), "--out", out, *model]) == 2
    assert "format_version=1" in capsys.readouterr().err
