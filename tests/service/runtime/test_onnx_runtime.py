"""The ONNX Runtime backend runs adapter-free U-Net calls on the export's base graphs, calls without VPT rows on
its LoRA-only graphs and every other call on the banked ones (told apart by which session ran), with the same
output; exports without those variants work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from adapters.packing import pack_banks
from export.graphs import BASE_GRAPHS, UNET_CFG, UNET_PLAIN
from export.manifest import Manifest, is_base_variant, is_lora_variant
from export.parity import BATCH_TOLERANCE, relative_error
from service.core.settings import EngineSettings
from service.engine import Engine, GenerationRequest
from service.runtime.onnx_runtime import OnnxRuntime, session_files
from tests.export.builders import without_variants
from tests.service.engine.helpers import generate, max_pixel_diff, random_lora, random_vpt

PROMPT = "a red circle on a blue background"
TEXT_DIM = 32  # the tiny pipeline's (tests/export/builders.py)


@pytest.fixture(scope="module")
def runtime(tiny_export: tuple[Path, Manifest]) -> OnnxRuntime:
    return OnnxRuntime(tiny_export[0], prefer_gpu=False, threads=1)


def call(runtime: OnnxRuntime, graph: str, adapter_free: bool, row_sets: list | None = None) -> torch.Tensor:
    """One U-Net call of two rows on seeded inputs, with banks packed for `row_sets` (default: adapter-free)."""
    info = runtime.info
    g = torch.Generator().manual_seed(0)
    size = info.latent_size
    rows = 2
    sample = torch.randn(rows, info.latent_channels, size, size, generator=g)
    timestep = torch.tensor([500.0, 20.0])
    cond = torch.randn(rows, info.spec.max_length, TEXT_DIM, generator=g)
    sets = row_sets or [None] * rows
    packed = pack_banks(sets, info.spec, info.lora_rank, info.vpt_tokens, components=("unet",))
    if graph == UNET_PLAIN:
        return runtime.unet(sample, timestep, cond, packed.adapter_slot, packed.unet, adapter_free=adapter_free)
    uncond = torch.zeros_like(cond)
    guidance = torch.full((rows,), 5.0)
    return runtime.unet_cfg(
        sample, timestep, cond, uncond, guidance, packed.adapter_slot, packed.unet, adapter_free=adapter_free
    )


def calls(runtime: OnnxRuntime) -> dict[str, int]:
    runners = {"banked": runtime.graphs, "base": runtime.base_graphs, "lora": runtime.lora_graphs}
    return {f"{kind}.{g}": runners[kind][g].calls for kind in runners for g in (UNET_CFG, UNET_PLAIN)}


def ran(runtime: OnnxRuntime, before: dict[str, int]) -> dict[str, int]:
    """Calls per session since `before`, only those that ran."""
    return {k: n - before[k] for k, n in calls(runtime).items() if n != before[k]}


@pytest.mark.parametrize("graph", [UNET_CFG, UNET_PLAIN])
def test_adapter_free_calls_run_the_base_graph_with_the_same_output(runtime: OnnxRuntime, graph: str) -> None:
    before = calls(runtime)
    base = call(runtime, graph, adapter_free=True)
    assert ran(runtime, before) == {f"base.{graph}": 1}
    before = calls(runtime)  # not vouched for: the smallest graph with banks (no row has VPT tokens)
    banked = call(runtime, graph, adapter_free=False)
    assert ran(runtime, before) == {f"lora.{graph}": 1}
    assert relative_error(base.numpy(), banked.numpy()) <= BATCH_TOLERANCE


@pytest.mark.parametrize("graph", [UNET_CFG, UNET_PLAIN])
def test_calls_without_vpt_rows_run_the_lora_graph_with_the_same_output(runtime: OnnxRuntime, graph: str) -> None:
    spec = runtime.info.spec
    lora_rows = [((random_lora(spec, 1), 0.8),), None]
    with_vpt = [((random_lora(spec, 1), 0.8),), ((random_vpt(spec, 2), 1.0),)]
    before = calls(runtime)
    lora_only = call(runtime, graph, adapter_free=False, row_sets=lora_rows)
    assert ran(runtime, before) == {f"lora.{graph}": 1}
    before = calls(runtime)
    both = call(runtime, graph, adapter_free=False, row_sets=with_vpt)
    assert ran(runtime, before) == {f"banked.{graph}": 1}
    # The LoRA row's output does not depend on the graph that ran it, nor on a VPT neighbour.
    assert relative_error(lora_only[:1].numpy(), both[:1].numpy()) <= BATCH_TOLERANCE
    assert not torch.allclose(lora_only[1:], both[1:])  # the VPT row did get its tokens


def test_the_engine_runs_each_call_on_the_smallest_graph(runtime: OnnxRuntime) -> None:
    engine = Engine(runtime, EngineSettings(max_rows=32))
    lora = ((random_lora(runtime.info.spec, 1), 0.8),)
    plain = GenerationRequest(PROMPT, seed=1, steps=2)
    unguided = GenerationRequest(PROMPT, seed=1, steps=2, guidance_scale=1.0)
    adapted = GenerationRequest(PROMPT, seed=1, steps=2, adapters=lora)
    prompted = GenerationRequest(PROMPT, seed=1, steps=2, adapters=((random_vpt(runtime.info.spec, 2), 1.0),))

    before = calls(runtime)
    generate(engine, plain, unguided)
    assert ran(runtime, before) == {f"base.{UNET_CFG}": 2, f"base.{UNET_PLAIN}": 2}
    before = calls(runtime)
    generate(engine, adapted)
    assert ran(runtime, before) == {f"lora.{UNET_CFG}": 2}
    before = calls(runtime)  # one adapted row makes the whole call banked; slot 0 rows still get the base model
    generate(engine, plain, adapted)
    assert ran(runtime, before) == {f"lora.{UNET_CFG}": 2}
    before = calls(runtime)  # a VPT row needs the full banked graph
    generate(engine, adapted, prompted)
    assert ran(runtime, before) == {f"banked.{UNET_CFG}": 2}


def test_an_export_without_reduced_graphs_runs_every_call_banked(
    tiny_export: tuple[Path, Manifest], runtime: OnnxRuntime, tmp_path: Path
) -> None:
    def reduced(variant: str) -> bool:
        return is_base_variant(variant) or is_lora_variant(variant)

    old = OnnxRuntime(without_variants(tiny_export[0], tmp_path / "old", reduced), prefer_gpu=False, threads=1)
    assert old.base_graphs == {} and old.lora_graphs == {}
    before = calls(runtime)
    want = call(runtime, UNET_CFG, adapter_free=True)
    assert ran(runtime, before) == {f"base.{UNET_CFG}": 1}
    assert old.graphs[UNET_CFG].calls == 0
    got = call(old, UNET_CFG, adapter_free=True)
    assert old.graphs[UNET_CFG].calls == 1
    assert relative_error(got.numpy(), want.numpy()) <= BATCH_TOLERANCE
    request = GenerationRequest(PROMPT, seed=4, steps=3)
    images = [generate(Engine(r), request)[0] for r in (old, runtime)]
    assert max_pixel_diff(*images) <= 1


def test_an_export_without_lora_graphs_runs_lora_calls_banked(
    tiny_export: tuple[Path, Manifest], tmp_path: Path
) -> None:
    old = OnnxRuntime(without_variants(tiny_export[0], tmp_path / "old", is_lora_variant), prefer_gpu=False, threads=1)
    assert old.lora_graphs == {} and set(old.base_graphs) == set(BASE_GRAPHS)
    call(old, UNET_CFG, adapter_free=False, row_sets=[((random_lora(old.info.spec, 1), 0.8),), None])
    assert old.graphs[UNET_CFG].calls == 1


def test_reduced_graphs_match_the_banked_graphs_precision(tiny_export: tuple[Path, Manifest]) -> None:
    entry = tiny_export[1].graphs[UNET_CFG]
    assert session_files(entry, fp16=False) == (
        "unet_cfg.onnx",
        {"base": "unet_cfg.base.onnx", "lora": "unet_cfg.lora.onnx"},
    )
    assert session_files(entry, fp16=True) == (
        "unet_cfg.fp16.onnx",
        {"base": "unet_cfg.base.fp16.onnx", "lora": "unet_cfg.lora.fp16.onnx"},
    )
    # fp32 base graphs beside fp16 banked ones would switch precision per batch: none is used then.
    older = replace(entry, variants={k: v for k, v in entry.variants.items() if k != "base_fp16"})
    assert session_files(older, fp16=True) == ("unet_cfg.fp16.onnx", {"lora": "unet_cfg.lora.fp16.onnx"})
    assert session_files(tiny_export[1].graphs["vae_decoder"], fp16=False) == ("vae_decoder.onnx", {})


@pytest.mark.parametrize(("base", "lora"), [(False, True), (True, False), (False, False)])
def test_reduced_sessions_can_be_left_closed(tiny_export: tuple[Path, Manifest], base: bool, lora: bool) -> None:
    runtime = OnnxRuntime(tiny_export[0], prefer_gpu=False, threads=1, base_graphs=base, lora_graphs=lora)
    assert bool(runtime.base_graphs) == base and bool(runtime.lora_graphs) == lora
    spec = runtime.info.spec
    call(runtime, UNET_CFG, adapter_free=False, row_sets=[((random_lora(spec, 1), 0.8),), None])
    call(runtime, UNET_CFG, adapter_free=True)
    banked_calls = runtime.graphs[UNET_CFG].calls  # what a closed variant would have served
    assert banked_calls == (not lora) + (not base and not lora)
