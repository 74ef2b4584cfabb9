"""Pipeline directories whose components hold only variant weights (`*.fp16.safetensors`), as half-precision
checkpoints are published: detected, loaded upcast to fp32, and refused with the reason when ambiguous."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from export.backbone import Backbone, load_backbone, load_backbone_without_weights
from export.errors import ExportError
from export.variants import pipeline_variants
from tests.export.builders import fp16_variant_dirs


@pytest.fixture(scope="module")
def fp16_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fp16_variant_dirs(tiny_model_dir, tmp_path_factory.mktemp("fp16"))


def parameters(backbone: Backbone) -> dict[str, torch.Tensor]:
    modules = {"unet": backbone.unet, "vae": backbone.vae, "text_encoder": backbone.text_encoder}
    return {f"{c}.{n}": p for c, m in modules.items() for n, p in m.state_dict().items()}


def test_a_variant_only_directory_is_detected_and_loads_as_its_plain_twin(fp16_dirs: tuple[Path, Path]) -> None:
    variant_dir, rounded_dir = fp16_dirs
    assert not list(variant_dir.glob("unet/diffusion_pytorch_model.safetensors"))  # only the variant files
    assert (variant_dir / "text_encoder" / "model.fp16.safetensors").is_file()
    assert pipeline_variants(variant_dir) == dict.fromkeys(("unet", "vae", "text_encoder"), "fp16")
    assert pipeline_variants(rounded_dir) == dict.fromkeys(("unet", "vae", "text_encoder"))
    loaded, expected = parameters(load_backbone(variant_dir)), parameters(load_backbone(rounded_dir))
    assert loaded.keys() == expected.keys()
    for name, value in loaded.items():
        assert value.dtype == torch.float32, name  # upcast, as the graphs run
        assert torch.equal(value, expected[name]), name
    assert parameters(load_backbone(variant_dir, "fp16")).keys() == expected.keys()  # named explicitly too


def test_the_weightless_backbone_reads_the_variant_too(fp16_dirs: tuple[Path, Path]) -> None:
    variant_dir, rounded_dir = fp16_dirs
    loaded = load_backbone_without_weights(variant_dir)
    expected = load_backbone_without_weights(rounded_dir)
    embedding = loaded.text_encoder.get_input_embeddings().weight
    assert embedding.dtype == torch.float32
    assert torch.equal(embedding, expected.text_encoder.get_input_embeddings().weight)


def test_a_missing_or_ambiguous_variant_is_refused_with_the_reason(
    fp16_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    variant_dir, _ = fp16_dirs
    with pytest.raises(ExportError, match="no 'bf16' weights nor plain ones"):
        load_backbone(variant_dir, "bf16")
    both = shutil.copytree(variant_dir, tmp_path / "both")
    fp16 = both / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    shutil.copy(fp16, both / "unet" / "diffusion_pytorch_model.bf16.safetensors")
    with pytest.raises(ExportError, match="several variants .* DIFFPLEX_MODEL_VARIANT"):
        load_backbone(both)
    assert pipeline_variants(both, "fp16")["unet"] == "fp16"


def test_export_runs_on_a_variant_directory(fp16_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    from export.exporter import ExportOptions, export_pipeline
    from export.graphs import TEXT_ENCODER

    variant_dir, _ = fp16_dirs
    options = ExportOptions(
        model_dir=variant_dir,
        out_dir=tmp_path / "export",
        lora_rank=4,
        vpt_tokens=3,
        optimize=False,
        graphs=(TEXT_ENCODER,),
    )
    manifest = export_pipeline(options, progress=lambda _: None)
    assert set(manifest.graphs) == {TEXT_ENCODER}
    assert (tmp_path / "export" / manifest.graphs[TEXT_ENCODER].file).is_file()


def test_plain_bin_directories_still_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert pipeline_variants(tmp_path / "bin") == dict.fromkeys(("unet", "vae", "text_encoder"))
    loaded, expected = parameters(load_backbone(tmp_path / "bin")), parameters(load_backbone(tiny_model_dir))
    assert all(torch.equal(v, expected[n]) for n, v in loaded.items())
