"""Step caching's U-Net split (export/step_cache.py) and its graphs: the shallow path on a fresh deep feature is the
full U-Net, on PyTorch and in the exported graphs; the contract names what each graph takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.backbone import load_backbone
from export.graph_names import SHALLOW_OF, UNET_CFG, UNET_PLAIN, UNET_SHALLOW
from export.manifest import Manifest
from export.ort_session import open_session
from export.parity import relative_error
from export.random_inputs import Dims, random_inputs
from export.step_cache import (
    DEEP_FEATURE,
    UNCOND_DEEP_FEATURE,
    StepCacheDims,
    capturing_deep_feature,
    shallow_unet,
)

FRESH_FEATURE_TOLERANCE = 1e-5  # the bound: a shallow step on a fresh feature is the full step


def _unet_inputs(unet: torch.nn.Module, rows: int, context: int, width: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    size = int(unet.config.sample_size)
    return {
        "sample": torch.randn(rows, unet.config.in_channels, size, size, generator=g),
        "timestep": torch.tensor([3.0, 500.0, 999.0][:rows]),
        "encoder_hidden_states": torch.randn(rows, context, width, generator=g),
    }


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_shallow_path_on_a_fresh_feature_is_the_full_unet(
    family: str, tiny_model_dir: Path, tiny_sdxl_model_dir: Path
) -> None:
    backbone = load_backbone(tiny_model_dir if family == "sd" else tiny_sdxl_model_dir)
    unet = backbone.unet
    length = int(backbone.text_encoder.config.max_position_embeddings)
    inputs = _unet_inputs(unet, 3, length, backbone.text_dim, seed=0)
    if backbone.is_xl:
        g = torch.Generator().manual_seed(1)
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(3, backbone.pooled_dim, generator=g),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64], [128, 96, 8, 4, 64, 64], [32, 32, 0, 0, 64, 64]]),
        }
    with torch.no_grad():
        with capturing_deep_feature(unet) as captured:
            full = unet(**inputs, return_dict=False)[0]
        (feature,) = captured
        with shallow_unet(unet, feature):
            shallow = unet(**inputs, return_dict=False)[0]
        stale = unet(**inputs, return_dict=False)[0]  # the forward is diffusers' again once the context closes
    dims = StepCacheDims.of(unet)
    assert feature.shape == (3, dims.feature_channels, *inputs["sample"].shape[2:])
    assert relative_error(shallow.numpy(), full.numpy()) <= FRESH_FEATURE_TOLERANCE
    assert torch.equal(stale, full)
    with torch.no_grad(), shallow_unet(unet, torch.zeros_like(feature)):
        other = unet(**inputs, return_dict=False)[0]
    assert relative_error(other.numpy(), full.numpy()) > 1e-2  # the feature is what the deep part contributes


def test_the_shallow_path_runs_the_outer_blocks_only() -> None:
    dims = StepCacheDims(feature_channels=64, up_blocks=3)
    runs = [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "up_blocks.2.attentions.1.proj_out",
        "conv_in",
        "time_embedding.linear_1",
        "add_embedding.linear_1",
    ]
    skipped = ["down_blocks.0.downsamplers.0.conv", "down_blocks.1.attentions.0.proj_in", "mid_block.attentions.0"]
    skipped += ["up_blocks.1.attentions.0.proj_in", "up_blocks.0.resnets.0.conv1"]
    assert all(dims.runs_shallow(name) for name in runs)
    assert not any(dims.runs_shallow(name) for name in skipped)


def test_the_export_records_the_split_and_the_graphs_take_only_what_their_path_runs(
    tiny_export: tuple[Path, Manifest],
) -> None:
    _, manifest = tiny_export
    widths = json.loads((Path(manifest.source) / "unet" / "config.json").read_text())["block_out_channels"]
    assert manifest.step_cache == StepCacheDims(feature_channels=widths[1], up_blocks=len(widths))
    outputs = {name: [o["name"] for o in manifest.graphs[name].outputs] for name in (UNET_CFG, UNET_PLAIN)}
    assert outputs == {
        UNET_CFG: ["noise_pred", DEEP_FEATURE, UNCOND_DEEP_FEATURE],
        UNET_PLAIN: ["noise_pred", DEEP_FEATURE],
    }
    for full, shallow in SHALLOW_OF.items():
        full_inputs = [i["name"] for i in manifest.graphs[full].inputs]
        shallow_inputs = [i["name"] for i in manifest.graphs[shallow].inputs]
        banks = [n for n in shallow_inputs if n.startswith(("lora_", "vpt"))]
        assert 0 < len(banks) < len([n for n in full_inputs if n.startswith(("lora_", "vpt"))])
        assert set(shallow_inputs) - set(full_inputs) == (
            {DEEP_FEATURE, UNCOND_DEEP_FEATURE} if full == UNET_CFG else {DEEP_FEATURE}
        )
        # The deep blocks' banks are not inputs: the first down block's and the last up block's are.
        assert all(n.startswith(("lora_", "vpt")) or n in full_inputs or "deep_feature" in n for n in shallow_inputs)
    vpt = [i["name"] for i in manifest.graphs[UNET_SHALLOW].inputs if i["name"].startswith("vpt.")]
    outer = ("unet.down_blocks.0.", f"unet.up_blocks.{manifest.step_cache.up_blocks - 1}.")
    want = [f"vpt.{j}" for j, block in enumerate(manifest.spec.vpt_blocks) if block.name.startswith(outer)]
    assert vpt == want and len(want) < len(manifest.spec.vpt_blocks)


@pytest.mark.parametrize("name", [UNET_CFG, UNET_PLAIN])
def test_the_exported_shallow_graph_on_the_full_graphs_feature_is_the_full_graph(
    tiny_export: tuple[Path, Manifest], name: str
) -> None:
    """ONNX Runtime end to end: the full graph's returned features, fed to the shallow graph with the same
    conditioning and adapter banks, reproduce the full graph's noise prediction."""
    out, manifest = tiny_export
    full_inputs, _ = manifest.graph_io(name)
    shallow_inputs, _ = manifest.graph_io(SHALLOW_OF[name])
    size = manifest.latent_size
    dims = Dims(rows=4, slots=3, height=size, width=size, context=manifest.spec.max_length, vae_scale_factor=4)
    values = random_inputs(full_inputs, dims, seed=5, slot_rows=[0, 1, 2, 1])
    feed = {s.name: v.numpy() for s, v in zip(full_inputs, values, strict=True)}
    full = open_session(out / manifest.graphs[name].file, threads=1)
    noise, *features = full.run(None, feed)
    names = (DEEP_FEATURE, UNCOND_DEEP_FEATURE) if name == UNET_CFG else (DEEP_FEATURE,)
    feed |= dict(zip(names, features, strict=True))
    shallow = open_session(out / manifest.graphs[SHALLOW_OF[name]].file, threads=1)
    (got,) = shallow.run(None, {s.name: feed[s.name] for s in shallow_inputs})
    assert relative_error(got, noise) <= FRESH_FEATURE_TOLERANCE
