"""`diffplex export` of an SDXL pipeline: the second text encoder's graph, the U-Nets' added conditioning inputs,
the host files of both text sides in the manifest and beside the graphs, every graph equal to its PyTorch module
(`--check`), and what is refused (TensorRT engines, not built for SDXL yet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from export.errors import ExportError
from export.exporter import ExportOptions, export_pipeline
from export.graph_names import TEXT_ENCODER, TEXT_ENCODER_2, UNET_CFG, UNET_PLAIN
from export.graphs import last_layer_banks
from export.manifest import TOKEN_EMBEDDING, TOKEN_EMBEDDING_2, TOKEN_EMBEDDINGS, Manifest
from export.parity import check_export
from tests.export.sdxl_builders import POOLED_DIM, TEXT_DIM, TEXT_DIM_2


def _names(tensors: list[dict]) -> list[str]:
    return [t["name"] for t in tensors]


def test_the_manifest_describes_the_sdxl_graphs(tiny_sdxl_export: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_sdxl_export
    assert manifest.sdxl == {"text_dim_2": TEXT_DIM_2, "pooled_dim": POOLED_DIM, "force_zeros_for_empty_prompt": True}
    assert manifest.text_dim == TEXT_DIM + TEXT_DIM_2  # the U-Net's context: both encoders side by side
    second = manifest.graphs[TEXT_ENCODER_2]
    assert _names(second.inputs)[:3] == ["inputs_embeds", "eos_index", "adapter_slot"]
    assert _names(second.outputs) == ["hidden_states", "text_embeds"]
    assert second.outputs[1]["shape"] == ["rows", POOLED_DIM]
    cfg, plain = (_names(manifest.graphs[g].inputs) for g in (UNET_CFG, UNET_PLAIN))
    assert cfg[5:8] == ["text_embeds", "uncond_text_embeds", "time_ids"]
    assert plain[3:5] == ["text_embeds", "time_ids"]
    # The first encoder's output is its penultimate layer: its last layer's LoRA banks are no inputs.
    first = set(_names(manifest.graphs[TEXT_ENCODER].inputs))
    unused = last_layer_banks(manifest.spec, "text_encoder")
    assert unused and not unused & first
    assert manifest.graphs[TEXT_ENCODER].outputs[0]["shape"][-1] == TEXT_DIM
    tables = load_file(out / TOKEN_EMBEDDINGS)
    assert tables[TOKEN_EMBEDDING].shape[1] == TEXT_DIM and tables[TOKEN_EMBEDDING_2].shape[1] == TEXT_DIM_2
    assert (out / "tokenizer_2" / "tokenizer_config.json").is_file()


def test_every_graph_matches_its_module(tiny_sdxl_export: tuple[Path, Manifest]) -> None:
    reports = check_export(tiny_sdxl_export[0])
    assert {r.graph for r in reports} >= {TEXT_ENCODER, TEXT_ENCODER_2, UNET_CFG, UNET_PLAIN}
    failed = [r.line() for r in reports if not r.ok]
    assert not failed, "\n".join(failed)


def test_tensorrt_is_refused_for_sdxl(tiny_sdxl_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="TensorRT engines are not built yet"):
        export_pipeline(ExportOptions(tiny_sdxl_model_dir, tmp_path, tensorrt=True), progress=lambda _: None)
