"""Family detection from a checkpoint's header: SD-1.x and SD-2.x (with the prediction type diffusers would infer,
or the caller's), and every other kind refused with what was found."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES
from safetensors.torch import save_file

from export import checkpoint_family as family_module
from export.checkpoint_family import check_shipped_config, detect_family
from export.checkpoint_file import header_digest, is_single_file, read_checkpoint_keys
from export.errors import ExportError

SD_UNET = {
    "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
    "model.diffusion_model.out.2.weight": (4, 32, 3, 3),
}
SD_VAE = {"first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3)}
CLIP = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8)}


def fake(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file with these tensor names and shapes (zeros): all that detection reads."""
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, path)
    return path


def test_the_key_names_are_diffusers_own() -> None:
    assert family_module.CLIP == CHECKPOINT_KEY_NAMES["clip"]
    assert family_module.OPEN_CLIP == CHECKPOINT_KEY_NAMES["open_clip"]
    assert family_module.UNET_CONV_IN == CHECKPOINT_KEY_NAMES["inpainting"]
    assert CHECKPOINT_KEY_NAMES["xl_base"].startswith(family_module.SDXL)
    assert CHECKPOINT_KEY_NAMES["xl_refiner"].startswith(family_module.SDXL)
    assert any(k.startswith(family_module.CONTROLNET) for k in CHECKPOINT_KEY_NAMES["controlnet"])


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sd1_and_sd2_layouts_are_detected(tiny_single_files: dict[str, Path], suffix: str) -> None:
    sd1 = detect_family(read_checkpoint_keys(tiny_single_files[f"sd1{suffix}"]))
    assert (sd1.name, sd1.prediction_type, sd1.shipped_config) == ("sd1", "epsilon", "sd15")
    sd2 = detect_family(read_checkpoint_keys(tiny_single_files[f"sd2{suffix}"]))
    # diffusers' inference: SD-2 is the 768 px v-prediction model unless a .ckpt records the base model's step.
    assert (sd2.name, sd2.prediction_type, sd2.shipped_config) == ("sd2", "v_prediction", "sd21")
    given = detect_family(read_checkpoint_keys(tiny_single_files[f"sd2{suffix}"]), "epsilon")
    assert (given.prediction_type, given.shipped_config) == ("epsilon", "sd21-base")
    assert detect_family(read_checkpoint_keys(tiny_single_files[f"sd1{suffix}"]), "v_prediction").prediction_type == (
        "v_prediction"
    )


def test_the_sd2_base_models_training_step_says_epsilon(tiny_sd2_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    from tests.export.ldm_layout import write_single_file

    base = write_single_file(tiny_sd2_model_dirs["epsilon"], tmp_path / "base.ckpt", "open_clip", global_step=875000)
    keys = read_checkpoint_keys(base)
    assert keys.global_step == 875000
    assert (detect_family(keys).prediction_type, detect_family(keys).shipped_config) == ("epsilon", "sd21-base")
    assert detect_family(keys, "v_prediction").shipped_config == "sd21"  # the caller's word wins


def test_sdxl_is_refused_as_not_served_yet(tmp_path: Path) -> None:
    xl = {
        **SD_UNET,
        **SD_VAE,
        CHECKPOINT_KEY_NAMES["clip_sdxl"]: (77, 8),
        CHECKPOINT_KEY_NAMES["xl_base"]: (8,),
    }
    with pytest.raises(ExportError, match="SDXL checkpoints are not served yet"):
        detect_family(read_checkpoint_keys(fake(tmp_path / "xl.safetensors", xl)))


@pytest.mark.parametrize(
    ("in_channels", "message"),
    [(9, "takes 9 input channels \\(an inpainting model\\)"), (8, "instruct-pix2pix"), (5, "takes 5 input channels")],
)
def test_other_unets_are_refused(tmp_path: Path, in_channels: int, message: str) -> None:
    shapes = {**SD_UNET, **SD_VAE, **CLIP, "model.diffusion_model.input_blocks.0.0.weight": (32, in_channels, 3, 3)}
    with pytest.raises(ExportError, match=message):
        detect_family(read_checkpoint_keys(fake(tmp_path / "other.safetensors", shapes)))
    upscaler = {**SD_UNET, **SD_VAE, **CLIP, "model.diffusion_model.label_emb.0.0.weight": (8, 8)}
    with pytest.raises(ExportError, match="class or image embeddings"):
        detect_family(read_checkpoint_keys(fake(tmp_path / "upscaler.safetensors", upscaler)))


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (
            {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)},
            "found 2 tensors under decoder.* \\(1\\), encoder.* \\(1\\)",
        ),
        ({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": (4, 8)}, "a LoRA adapter, not a model"),
        ({"control_model.time_embed.0.weight": (8, 8)}, "a ControlNet"),
        ({**SD_UNET, **CLIP}, "has no VAE"),
        ({**SD_UNET, **SD_VAE}, "no text encoder; expected CLIP"),
        ({**SD_UNET, **SD_VAE, "cond_stage_model.model.positional_embedding": (77, 8)}, "another layout"),
        ({"model.diffusion_model.joint_blocks.0.x_block.mlp.fc1.weight": (8, 8)}, "U-Net without SD's input_blocks"),
    ],
)
def test_unknown_files_are_refused_naming_what_was_found(tmp_path: Path, shapes: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        detect_family(read_checkpoint_keys(fake(tmp_path / "unknown.safetensors", shapes)))


def test_files_that_are_no_checkpoint_are_refused(tmp_path: Path) -> None:
    assert is_single_file(Path("x.SafeTensors")) and is_single_file(Path("x.ckpt")) and not is_single_file(Path("x"))
    with pytest.raises(ExportError, match="expected a .safetensors or .ckpt file"):
        read_checkpoint_keys(fake(tmp_path / "model.bin", SD_UNET))
    with pytest.raises(ExportError, match="does not exist"):
        read_checkpoint_keys(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ExportError, match="header length .* is impossible"):
        read_checkpoint_keys(garbage)
    garbage.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(ExportError, match="header is not JSON"):
        read_checkpoint_keys(garbage)
    not_a_pickle = tmp_path / "model.ckpt"
    not_a_pickle.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot read .* as a PyTorch checkpoint"):
        read_checkpoint_keys(not_a_pickle)


def test_the_shipped_configs_are_refused_for_another_architecture(tiny_single_files: dict[str, Path]) -> None:
    keys = read_checkpoint_keys(tiny_single_files["sd1.safetensors"])
    with pytest.raises(ExportError) as refused:
        check_shipped_config(keys, detect_family(keys))
    message = str(refused.value)
    assert "U-Net base width 32 (expected 320)" in message and "cross-attention width 32 (expected 768)" in message
    assert "--config DIR" in message and "DIFFPLEX_MODEL_CONFIG_DIR" in message
    sd2 = read_checkpoint_keys(tiny_single_files["sd2.safetensors"])
    with pytest.raises(ExportError, match="text width 32 \\(expected 1024\\)"):
        check_shipped_config(sd2, detect_family(sd2))


def test_the_header_digest_changes_with_the_tensors_not_the_weights(tmp_path: Path) -> None:
    first = fake(tmp_path / "a.safetensors", SD_UNET)
    digest = header_digest(first)
    save_file({name: torch.ones(shape) for name, shape in SD_UNET.items()}, tmp_path / "b.safetensors")
    assert header_digest(tmp_path / "b.safetensors") == digest  # the same names, shapes and offsets
    assert header_digest(fake(tmp_path / "c.safetensors", {**SD_UNET, **CLIP})) != digest
