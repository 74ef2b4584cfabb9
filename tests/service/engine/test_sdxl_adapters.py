"""SDXL adapters through the engine (PyTorch and ONNX Runtime): a diffusers-format LoRA on the U-Net and both
text encoders, its kohya rename and a clip_l / clip_g embedding give diffusers' images; a request with an adapter is
the same alone and among 15 neighbours with other tenants' SDXL adapters (LoRAs, an embedding, a VPT); adapters of
the other family are refused at upload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from adapters.errors import AdapterError
from adapters.formats import load_adapter_file
from adapters.types import TextualInversion
from adapters.validate import ExportLimits
from service.core.settings import Settings
from service.engine import GenerationRequest
from service.hotload.upload import inspect_upload
from service.runtime.torch_runtime import TorchRuntime
from tests.adapters.builders import kohya_lora_bytes, safetensors_bytes
from tests.adapters.sdxl.builders import peft_sdxl_models, save_sdxl_lora, sdxl_kohya_from_diffusers
from tests.export.sdxl_builders import TEXT_DIM, TEXT_DIM_2
from tests.service.engine.helpers import generate, max_pixel_diff, random_vpt
from tests.service.engine.test_sdxl import BACKENDS, diffusers_image, engine_for

PROMPT = "a red circle on a blue background"
TI_PROMPT = "a <glow> circle on a blue background"
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def lora_files(tiny_sdxl_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """seed -> a diffusers-format LoRA on the U-Net and both text encoders; "kohya" -> seed 10's kohya rename."""
    out = tmp_path_factory.mktemp("sdxl-loras")
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model_dir)
    models = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    files = {
        str(seed): save_sdxl_lora(peft_sdxl_models(models, RANK, ALPHA, seed), out / str(seed))
        for seed in range(10, 14)
    }
    files["kohya"] = out / "kohya.safetensors"
    files["kohya"].write_bytes(safetensors_bytes(sdxl_kohya_from_diffusers(files["10"], ALPHA)))
    return files


def ti_file(tmp_path: Path, seed: int = 5) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    vectors = {
        "clip_l": 2 * torch.randn(2, TEXT_DIM, generator=g),
        "clip_g": 2 * torch.randn(2, TEXT_DIM_2, generator=g),
    }
    path = tmp_path / "glow.safetensors"
    path.write_bytes(safetensors_bytes(vectors))
    return path, vectors


def gen(prompt: str, seed: int, adapters: tuple = (), **fields: object) -> GenerationRequest:
    return GenerationRequest(
        prompt, seed=seed, steps=4, guidance_scale=4.0, sampler="euler", adapters=adapters, **fields
    )


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layout", ["10", "kohya"])
def test_a_lora_on_the_unet_and_both_encoders_matches_load_lora_weights(
    layout: str, backend: str, request: pytest.FixtureRequest, lora_files: dict[str, Path], tiny_sdxl_model_dir: Path
) -> None:
    sdxl_engine = engine_for(backend, request)
    adapter = load_adapter_file(lora_files[layout])
    assert {name.split(".", 1)[0] for name in adapter.layers} == {"unet", "text_encoder", "text_encoder_2"}
    want = diffusers_image(
        tiny_sdxl_model_dir, steps=4, seed=3, lora=lora_files[layout], prompt=PROMPT, guidance_scale=4.0
    )
    got = generate(sdxl_engine, gen(PROMPT, 3, ((adapter, 1.0),)))[0]
    assert max_pixel_diff(got, want) <= BACKENDS[backend]
    assert (
        max_pixel_diff(want, diffusers_image(tiny_sdxl_model_dir, steps=4, seed=3, prompt=PROMPT, guidance_scale=4.0))
        > 16
    )  # the LoRA shows


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_an_sdxl_embedding_matches_load_textual_inversion(
    backend: str, request: pytest.FixtureRequest, tiny_sdxl_model_dir: Path, tmp_path: Path
) -> None:
    sdxl_engine = engine_for(backend, request)
    path, vectors = ti_file(tmp_path)
    adapter = load_adapter_file(path, token="<glow>")  # the file names none: an upload's `token` field
    assert isinstance(adapter, TextualInversion) and adapter.is_sdxl
    want = diffusers_image(tiny_sdxl_model_dir, steps=4, seed=4, ti=vectors, prompt=TI_PROMPT, guidance_scale=4.0)
    got = generate(sdxl_engine, gen(TI_PROMPT, 4, ((adapter, 1.0),)))[0]
    assert max_pixel_diff(got, want) <= BACKENDS[backend]
    assert (
        max_pixel_diff(
            want,
            diffusers_image(
                tiny_sdxl_model_dir, steps=4, seed=4, prompt="a  circle on a blue background", guidance_scale=4.0
            ),
        )
        > 8
    )


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_row_is_the_same_among_15_neighbours_with_other_adapters(
    backend: str, request: pytest.FixtureRequest, lora_files: dict[str, Path], tmp_path: Path
) -> None:
    sdxl_engine = engine_for(backend, request)
    loras = [load_adapter_file(lora_files[str(seed)]) for seed in range(10, 14)]
    ti = load_adapter_file(ti_file(tmp_path)[0], token="<glow>")
    vpt = ((random_vpt(sdxl_engine.info.spec, seed=2), 1.0),)  # prompt tokens in each of SDXL's transformer blocks
    mine = gen(PROMPT, 7, ((loras[0], 0.8),), negative_prompt="green")
    alone = generate(sdxl_engine, mine)[0]
    neighbours = [
        gen(
            TI_PROMPT if i % 3 == 0 else f"a small square number {i}",
            seed=100 + i,
            adapters=(((loras[1 + i % 3], 0.5 + 0.1 * (i % 4)),) if i % 3 else ((ti, 1.0),)) if i % 5 else vpt,
            original_size=(32 + 8 * i, 16),
            negative_prompt=None if i % 2 else "blue",
        )
        for i in range(15)
    ]
    together = generate(sdxl_engine, mine, *neighbours)[0]
    assert max_pixel_diff(alone, together) <= 1


def _inspect(data: bytes, name: str, kind: str, runtime: TorchRuntime) -> None:
    info = runtime.info
    limits = ExportLimits(max_lora_rank=info.lora_rank, max_vpt_tokens=info.vpt_tokens)
    inspect_upload(data, name, kind, None, info.spec, limits, Settings().limits.max_adapter_upload_bytes)


def test_adapters_of_the_other_family_are_refused_at_upload(
    lora_files: dict[str, Path], sdxl_runtime: TorchRuntime, torch_runtime: TorchRuntime, tiny_model_dir: Path
) -> None:
    sdxl_lora = lora_files["10"].read_bytes()
    with pytest.raises(AdapterError, match="SDXL's second text encoder"):
        _inspect(sdxl_lora, "xl", "lora", torch_runtime)
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, requires_safety_checker=False)
    sd_lora = kohya_lora_bytes(sd.unet, sd.text_encoder, rank=2, alpha=2.0, seed=1)
    with pytest.raises(AdapterError, match="another model family or shape"):
        _inspect(sd_lora, "sd", "lora", sdxl_runtime)
    sd_ti = safetensors_bytes({"<sd>": torch.randn(1, TEXT_DIM)})
    with pytest.raises(AdapterError, match="an SDXL embedding carries clip_l"):
        _inspect(sd_ti, "sd", "textual_inversion", sdxl_runtime)
