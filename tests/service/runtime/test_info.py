"""`load_backbone_info` (what role "api" validates against) equals the info of the runtime that loads the weights:
same spec and fingerprint, sizes, scheduler, tokenizer and token embeddings, for a pipeline directory (the tiny
test pipeline and the shipped shapes backbone) and for an export, while it builds no weights but the few the
fingerprint hashes."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters.fingerprint import fingerprinted_parameters, sampled_names
from adapters.spec import build_spec
from export.backbone import load_backbone, load_backbone_without_weights
from export.errors import ExportError
from export.manifest import Manifest
from service.core.settings import DEFAULT_MODEL_DIR
from service.runtime import BackboneInfo, load_backbone_info
from service.runtime.onnx_runtime import OnnxRuntime
from service.runtime.torch_runtime import TorchRuntime

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def assert_same_info(light: BackboneInfo, loaded: BackboneInfo) -> None:
    assert light.spec.fingerprint == loaded.spec.fingerprint
    for field in fields(BackboneInfo):
        a, b = getattr(light, field.name), getattr(loaded, field.name)
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), field.name
        else:
            assert a == b, field.name


def sampled_unet_tensor(model_dir: Path) -> str:
    """The name (in the U-Net's weights file) of a parameter whose values the fingerprint hashes."""
    backbone = load_backbone(model_dir)
    sampled = sampled_names(fingerprinted_parameters(backbone.unet, backbone.text_encoder))
    return next(n for n in sampled if n.startswith("unet.")).removeprefix("unet.")


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_a_pipeline_without_its_weights_gives_the_loaded_runtimes_info(which: str, tiny_model_dir: Path) -> None:
    model_dir = tiny_model_dir if which == "tiny" else DEFAULT_MODEL_DIR
    if not (model_dir / "model_index.json").is_file():
        pytest.skip(f"no pipeline at {model_dir} (make train-backbone)")
    light = load_backbone_info("pytorch", model_dir, lora_rank=4, vpt_tokens=3)
    assert_same_info(light, TorchRuntime(model_dir, lora_rank=4, vpt_tokens=3).info)


def test_an_export_gives_the_runtimes_info_and_the_pipelines_fingerprint(
    tiny_export: tuple[Path, Manifest], tiny_model_dir: Path
) -> None:
    export_dir, manifest = tiny_export
    light = load_backbone_info("onnxruntime", tiny_model_dir, export_dir)
    assert_same_info(light, OnnxRuntime(export_dir, prefer_gpu=False, threads=1).info)
    assert light.spec.fingerprint == manifest.fingerprint
    assert light.spec == load_backbone_info("pytorch", tiny_model_dir, lora_rank=4, vpt_tokens=3).spec


def test_checkpoints_with_transformers_text_model_prefix_read_the_same(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Text encoders saved by transformers 4 name their tensors `text_model.<...>`; the loaded model does not care."""
    prefixed = tmp_path / "prefixed"
    shutil.copytree(tiny_model_dir, prefixed)
    weights = prefixed / "text_encoder" / "model.safetensors"
    tensors = load_file(weights)
    assert not any(k.startswith("text_model.") for k in tensors)  # this transformers saves them unprefixed
    save_file({f"text_model.{k}": v for k, v in tensors.items()}, weights)
    light = load_backbone_info("pytorch", prefixed, lora_rank=4, vpt_tokens=3)
    assert_same_info(light, TorchRuntime(prefixed, lora_rank=4, vpt_tokens=3).info)
    assert light.spec.fingerprint == load_backbone_info("pytorch", tiny_model_dir).spec.fingerprint


def test_only_the_fingerprinted_parameters_and_the_token_table_hold_values(tiny_model_dir: Path) -> None:
    backbone = load_backbone_without_weights(tiny_model_dir)
    params = fingerprinted_parameters(backbone.unet, backbone.text_encoder)
    real = {name for name, p in params.items() if not p.is_meta}
    assert real == {*sampled_names(params), "text_encoder.embeddings.token_embedding.weight"}
    assert len(params) > 4 * len(real)
    assert all(p.is_meta for p in backbone.vae.parameters())


def test_the_fingerprint_reads_the_values_in_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Changed weights, same shapes: another fingerprint, the one the loaded backbone has."""
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    name = sampled_unet_tensor(changed)
    tensors = load_file(changed / UNET_WEIGHTS)
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, changed / UNET_WEIGHTS)

    light = load_backbone_info("pytorch", changed).spec.fingerprint
    assert light != load_backbone_info("pytorch", tiny_model_dir).spec.fingerprint
    reloaded = load_backbone(changed)
    assert light == build_spec(reloaded.unet, reloaded.text_encoder).fingerprint


def test_missing_or_mismatched_weights_are_refused_with_the_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    name = sampled_unet_tensor(tiny_model_dir)
    tensors = load_file(tiny_model_dir / UNET_WEIGHTS)
    for case, weights, message in (
        ("missing", {k: v for k, v in tensors.items() if k != name}, f"weights lack unet.{name}"),
        ("reshaped", {**tensors, name: tensors[name].reshape(1, -1)}, "does not match its config"),
    ):
        broken = tmp_path / case
        shutil.copytree(tiny_model_dir, broken)
        save_file(weights, broken / UNET_WEIGHTS)
        with pytest.raises(ExportError, match=message):
            load_backbone_info("pytorch", broken)
    pickled_only = tmp_path / "pickled"  # e.g. a text encoder shipped as model.bin only: never unpickled here
    shutil.copytree(tiny_model_dir, pickled_only)
    (pickled_only / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="no diffusion_pytorch_model.safetensors or model.safetensors"):
        load_backbone_info("pytorch", pickled_only)
