"""Export of a tiny SD-shaped pipeline: graphs, IO contract, manifest, host files, parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from adapters.packing import ADAPTER_SLOT, RANK_AXIS, is_lora_bank
from adapters.targets import DEFAULT_LORA_RANK
from export.errors import ExportError
from export.exporter import ExportOptions, export_pipeline
from export.graphs import BASE_GRAPHS, GRAPHS, UNET_CFG
from export.manifest import MANIFEST, Manifest, load_manifest
from export.parity import check_export


def test_every_graph_is_written_with_its_variants(tiny_export: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_export
    assert set(manifest.graphs) == set(GRAPHS)
    for name, entry in manifest.graphs.items():
        assert (out / entry.file).is_file()
        variants = {"ort_optimized", "fp16"}
        if name in BASE_GRAPHS:
            variants |= {
                f"{family}{suffix}" for family in ("base", "lora") for suffix in ("", "_ort_optimized", "_fp16")
            }
        assert set(entry.variants) == variants, name
        assert all(file in manifest.files for file in entry.variants.values()), name
        model = onnx.load(str(out / entry.file))
        assert model.opset_import[0].version >= 17
        assert [i.name for i in model.graph.input] == [i["name"] for i in entry.inputs]


@pytest.mark.parametrize("name", BASE_GRAPHS)
@pytest.mark.parametrize(
    ("family", "dropped"),
    [("base", ("lora_", "vpt", ADAPTER_SLOT)), ("lora", ("vpt",))],  # adapter-free; LoRA-only
)
def test_reduced_variants_take_the_contract_inputs_less_theirs(
    tiny_export: tuple[Path, Manifest], name: str, family: str, dropped: tuple[str, ...]
) -> None:
    out, manifest = tiny_export
    entry = manifest.graphs[name]
    want = [i["name"] for i in entry.inputs if not i["name"].startswith(dropped)]
    for suffix in ("", "_ort_optimized", "_fp16"):
        model = onnx.load(str(out / entry.variants[family + suffix]))
        assert [i.name for i in model.graph.input] == want, family + suffix
        assert [o.name for o in model.graph.output] == [o["name"] for o in entry.outputs], family + suffix


def test_no_lora_variant_without_vpt_banks(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With P = 0 the banked graph is already LoRA-only."""
    options = ExportOptions(tiny_model_dir, tmp_path, vpt_tokens=0, graphs=(UNET_CFG,), optimize=False)
    manifest = export_pipeline(options, progress=lambda _: None)
    assert set(manifest.graphs[UNET_CFG].variants) == {"base"}


def test_unet_cfg_takes_the_contract_inputs(tiny_export: tuple[Path, Manifest]) -> None:
    _, manifest = tiny_export
    names = [i["name"] for i in manifest.graphs[UNET_CFG].inputs]
    assert names[:6] == [
        "sample",
        "timestep",
        "encoder_hidden_states",
        "uncond_hidden_states",
        "guidance_scale",
        ADAPTER_SLOT,
    ]
    targets = manifest.spec.targets("unet")
    assert names.count("lora_a.0") == 1 and f"lora_b.{len(targets) - 1}" in names
    assert f"vpt.{len(manifest.spec.vpt_blocks) - 1}" in names and "vpt_mask.0" in names
    shapes = {i["name"]: i["shape"] for i in manifest.graphs[UNET_CFG].inputs}
    assert shapes["lora_a.0"] == ["slots", RANK_AXIS, targets[0].d_in]
    assert shapes["lora_b.0"] == ["slots", targets[0].d_out, RANK_AXIS]
    assert shapes["vpt.0"] == ["slots", 3, manifest.spec.vpt_dims[0]]


def test_the_lora_banks_rank_is_a_dynamic_axis_of_every_graph_file(tiny_export: tuple[Path, Manifest]) -> None:
    """Text encoder and U-Nets, banked and LoRA-only, portable, ORT-optimized and fp16: each call's banks may carry
    their own rank."""
    out, manifest = tiny_export
    checked = 0
    for entry in manifest.graphs.values():
        for file in {entry.file, *entry.variants.values()}:
            if not file.endswith(".onnx"):
                continue
            for value in onnx.load(str(out / file), load_external_data=False).graph.input:
                if is_lora_bank(value.name):
                    dims = value.type.tensor_type.shape.dim
                    rank = dims[1] if value.name.startswith("lora_a.") else dims[2]
                    assert rank.dim_param == RANK_AXIS and not rank.HasField("dim_value"), (file, value.name)
                    checked += 1
    # The text encoder's banks in 3 files, the U-Nets' in 6 each (banked and LoRA-only, 3 forms), the shallow U-Nets'
    # (step caching) those of the modules their path runs.
    n_te, n_unet = len(manifest.spec.targets("text_encoder")), len(manifest.spec.targets("unet"))
    n_shallow = sum(
        manifest.step_cache.runs_shallow(t.name.removeprefix("unet.")) for t in manifest.spec.targets("unet")
    )
    assert checked == 2 * (3 * n_te + 2 * 6 * n_unet + 2 * 6 * n_shallow)


def test_manifest_round_trips_and_lists_every_file(tiny_export: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_export
    loaded = load_manifest(out, expected_fingerprint=manifest.fingerprint)
    assert loaded.to_dict() == manifest.to_dict()
    assert {"token_embeddings.safetensors", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"} <= set(
        loaded.files
    )
    assert loaded.lora_rank == 128 and loaded.vpt_tokens == 3 and loaded.latent_size == 8
    assert loaded.rank_dim == RANK_AXIS and loaded.fixed_lora_rank is None
    assert loaded.vae_scale_factor == 2 and loaded.text_dim == 32


def test_runtime_refuses_another_backbone(tiny_export: tuple[Path, Manifest]) -> None:
    out, _ = tiny_export
    with pytest.raises(ExportError, match="re-export it from this model"):
        load_manifest(out, expected_fingerprint="0" * 64)


def test_corrupt_graph_is_refused(tiny_export: tuple[Path, Manifest], tmp_path: Path) -> None:
    out, manifest = tiny_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / manifest.graphs[UNET_CFG].file, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="sha256"):
        load_manifest(copy)
    (copy / MANIFEST).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ExportError, match="format_version"):
        load_manifest(copy)


def test_parity_on_random_inputs_and_banks(tiny_export: tuple[Path, Manifest], tiny_model_dir: Path) -> None:
    out, _ = tiny_export
    reports = check_export(out, tiny_model_dir)
    failed = [r.line() for r in reports if not r.ok and not r.skipped]
    assert not failed, "\n".join(failed)
    checked = {(r.graph, r.variant) for r in reports if not r.skipped}
    # fp16 included: ORT's CPU provider runs it, so a graph it refuses to load is a failure here, not a skip.
    assert {(g, v) for g in GRAPHS for v in ("onnx", "ort_optimized", "fp16")} <= checked
    assert {(g, v) for g in BASE_GRAPHS for v in ("base", "base_ort_optimized", "base_fp16")} <= checked
    unet = next(r for r in reports if (r.graph, r.variant) == (UNET_CFG, "onnx"))
    assert set(unet.metrics) == {"ort_vs_torch", "batch_invariance", "slot0_is_base"}
    base = next(r for r in reports if (r.graph, r.variant) == (UNET_CFG, "base"))
    assert set(base.metrics) == {"ort_vs_torch", "batch_invariance"}


def test_the_rank_cap_defaults_to_128_everywhere() -> None:
    import inspect

    from export.cli import build_parser
    from service.core.settings import Settings
    from service.runtime.loader import load_backbone_info, load_runtime
    from service.runtime.torch_runtime import TorchRuntime

    defaults = {
        "ExportOptions": ExportOptions(model_dir=Path("m"), out_dir=Path("o")).lora_rank,
        "diffplex export --lora-rank": build_parser().parse_args(["--out", "o"]).lora_rank,
        "DIFFPLEX_ENGINE__LORA_RANK": Settings().engine.lora_rank,
        **{
            f.__qualname__: inspect.signature(f).parameters["lora_rank"].default
            for f in (load_runtime, load_backbone_info, TorchRuntime.__init__)
        },
    }
    assert defaults == dict.fromkeys(defaults, DEFAULT_LORA_RANK) and DEFAULT_LORA_RANK == 128


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"opset": 13}, "opset"),
        ({"lora_rank": 0}, "--lora-rank"),
        ({"unet_targets": ("no_such_module",)}, "match no unet module"),
        ({"unet_targets": ("conv_in",)}, "neither nn.Linear nor a 1x1"),
    ],
)
def test_bad_options_are_refused(tiny_model_dir: Path, tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        export_pipeline(ExportOptions(model_dir=tiny_model_dir, out_dir=tmp_path, **change), progress=lambda _: None)


def test_unsupported_model_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a diffusers pipeline"):
        export_pipeline(ExportOptions(model_dir=tmp_path, out_dir=tmp_path / "o"), progress=lambda _: None)
    fake = tmp_path / "sdxl"
    shutil.copytree(tiny_model_dir, fake)
    index = json.loads((fake / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DModel"]
    (fake / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ExportError, match="unsupported model"):
        export_pipeline(ExportOptions(model_dir=fake, out_dir=tmp_path / "o"), progress=lambda _: None)
