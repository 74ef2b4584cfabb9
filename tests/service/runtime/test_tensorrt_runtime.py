"""The engine on the TensorRT backend (GPU machines only): adapter-free, LoRA and VPT rows in one batch make
the images the ONNX Runtime backend makes from the same export. TensorRT builds no base or LoRA-only engines,
so every U-Net call runs the banked engines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.manifest import Manifest, load_manifest
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime
from tests.service.engine.helpers import generate, max_pixel_diff, random_lora, random_vpt

PROMPT = "a red circle on a blue background"


@pytest.mark.gpu
def test_the_engine_on_tensorrt_matches_onnx_runtime(tiny_export: tuple[Path, Manifest], tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    from export.tensorrt_build import build_engines
    from service.runtime.tensorrt_runtime import TensorRTRuntime

    out = tmp_path / "export"
    shutil.copytree(tiny_export[0], out)
    manifest = load_manifest(out)
    build_engines(out, manifest, fp16=False, progress=lambda _: None)
    manifest.save(out)
    tensorrt = TensorRTRuntime(out)
    spec = tensorrt.info.spec

    def requests() -> list[GenerationRequest]:
        return [
            GenerationRequest(PROMPT, seed=1, steps=3),
            GenerationRequest(PROMPT, seed=2, steps=3, adapters=((random_lora(spec, 1), 0.8),)),
            GenerationRequest(PROMPT, seed=3, steps=3, guidance_scale=1.0, adapters=((random_vpt(spec, 2), 1.0),)),
        ]

    got = generate(Engine(tensorrt), *requests())
    want = generate(Engine(OnnxRuntime(out, prefer_gpu=False, threads=1)), *requests())
    assert [max_pixel_diff(a, b) <= 2 for a, b in zip(got, want, strict=True)] == [True, True, True]
