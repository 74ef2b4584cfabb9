"""The codec stage teaches the autoencoder without moving the latents the U-Net was trained on."""

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from models.shapes.architecture import BackboneConfig, build_vae
from models.shapes.codec_stage import CodecStage, shows_only_trained_values, teach_held_out
from models.shapes.dataset import make_batch
from models.shapes.train_backbone import PIPELINE_DIR, main


def test_only_scenes_without_held_out_values_are_pinned():
    scenes = make_batch(64, seed=5, include_held_out=True).scenes
    flags = [shows_only_trained_values(s) for s in scenes]
    assert any(flags) and not all(flags)
    for scene, flag in zip(scenes, flags, strict=True):
        held = scene.shape == "star" or scene.fill == "striped" or scene.background == "night"
        assert flag is not held


def test_the_pin_keeps_trained_latents_that_an_unpinned_fine_tune_moves():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    base = build_vae(BackboneConfig())
    batch = make_batch(48, seed=3, include_held_out=True)
    trained = np.array([shows_only_trained_values(s) for s in batch.scenes])
    check = make_batch(16, seed=4).images
    stage = CodecStage(steps=6, batch=8, keep_weight=100.0)
    unpinned = dataclasses.replace(stage, keep_weight=0.0)
    pinned = teach_held_out(copy.deepcopy(base), batch.images, trained, stage, check)
    free = teach_held_out(copy.deepcopy(base), batch.images, trained, unpinned, check)
    assert 0 < pinned["codec_latent_drift"] < free["codec_latent_drift"] / 2


def test_a_stage_with_nothing_to_pin_is_refused():
    batch = make_batch(4, seed=3)
    with pytest.raises(ValueError, match="at least one image to pin"):
        teach_held_out(build_vae(BackboneConfig()), batch.images, np.zeros(4, bool), CodecStage(steps=1), batch.images)


def test_only_codec_stage_updates_a_trained_pipeline_once(tmp_path):
    pipeline = tmp_path / "pipeline"
    shutil.copytree(PIPELINE_DIR, pipeline)
    # The shipped pipeline already had the stage: its record, less the stage's figures, is one that has not.
    record = json.loads((pipeline / "training.json").read_text())
    record = {k: v for k, v in record.items() if not k.startswith("codec")}
    (pipeline / "training.json").write_text(json.dumps(record))
    before = AutoencoderKL.from_pretrained(pipeline / "vae").decoder.conv_out.weight.clone()
    args = ["--out", str(pipeline), "--work", str(tmp_path / "work"), "--only-codec-stage"]
    main([*args, "--codec-steps", "1", "--codec-images", "32"])
    after = json.loads((pipeline / "training.json").read_text())
    assert after["recipe"]["codec_steps"] == 1 and after["codec_latent_drift"] >= 0
    assert after["recipe"]["seed"] == record["recipe"]["seed"]
    assert not torch.equal(AutoencoderKL.from_pretrained(pipeline / "vae").decoder.conv_out.weight, before)
    with pytest.raises(SystemExit, match="already ran"):
        main([*args, "--codec-steps", "1"])
    assert (pipeline / "model_index.json").exists()
