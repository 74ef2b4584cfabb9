"""Test-only inverse of diffusers' single-file conversion: a diffusers pipeline directory's weights written as a
single-file checkpoint in the original LDM / A1111 key layout (what `model.safetensors` files found online hold),
so that the converter can be tested on checkpoints built here, with tiny random weights.

Layout, per component:
- U-Net `model.diffusion_model.`: `input_blocks.{n}` (n = 0: conv_in; then per down block its layers, each a
  resnet `.0` and an optional transformer `.1`, then its downsampler `.0.op`), `middle_block.{0,1,2}` (resnet,
  transformer, resnet), `output_blocks.{n}` (per up block its layers: resnet `.0`, transformer `.1`, upsampler
  `.1.conv` or `.2.conv` after a transformer), `time_embed.{0,2}`, `out.{0,2}`; resnets name their layers
  `in_layers.{0,2}`, `out_layers.{0,3}`, `emb_layers.1`, `skip_connection`.
- VAE `first_stage_model.`: `{encoder,decoder}.{down,up}.{i}.block.{j}` (the decoder's up blocks numbered from the
  lowest resolution), `.downsample.conv` / `.upsample.conv`, `mid.block_{1,2}`, `mid.attn_1` with q, k, v and
  proj_out as 1x1 convolutions, `norm_out`; resnet shortcuts are `nin_shortcut`.
- SD-1 text encoder: transformers' CLIP under `cond_stage_model.transformer.text_model.`.
- SD-2 text encoder: OpenCLIP under `cond_stage_model.model.`: `token_embedding`, `positional_embedding`,
  `transformer.resblocks.{i}` with `attn.in_proj_{weight,bias}` (q, k, v stacked), `attn.out_proj`, `ln_1`, `ln_2`,
  `mlp.c_fc`, `mlp.c_proj`, then `ln_final`, `text_projection`, `logit_scale`; like the published checkpoints it
  holds one more resblock than the text encoder diffusers builds (SD-2 reads the penultimate layer).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

TextLayout = Literal["clip", "open_clip"]
RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str, names: dict[str, str]) -> str:
    layer, _, param = rest.partition(".")
    return f"{names.get(layer, layer)}.{param}"


def unet_key(key: str, layers: int, up_attention: list[bool]) -> str:
    """A diffusers U-Net parameter name -> its LDM name (`layers`: layers_per_block)."""
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    module, _, param = key.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = 1 + block * (layers + 1) + layer
        return f"input_blocks.{n}.0.{_resnet(rest, RESNET)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{0 if m[1] == '0' else 2}.{_resnet(m[2], RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = block * (layers + 1) + layer  # up blocks have one layer more than down blocks
        return f"output_blocks.{n}.0.{_resnet(rest, RESNET)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        return f"output_blocks.{block * (layers + 1) + layers}.{2 if up_attention[block] else 1}.conv.{m[2]}"
    raise KeyError(f"no LDM name for U-Net parameter {key}")


def vae_key(key: str, up_blocks: int) -> str:
    """A diffusers VAE parameter name -> its LDM name."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    part, _, rest = key.partition(".")
    shortcut = {"conv_shortcut": "nin_shortcut"}
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.down.{m[1]}.block.{m[2]}.{_resnet(m[3], shortcut)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.up.{up_blocks - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3], shortcut)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.up.{up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{_resnet(m[2], shortcut)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{part}.mid.attn_1.{VAE_ATTENTION[m[1]]}.{m[2]}"
    renamed = {"conv_norm_out": "norm_out"}
    module, _, param = rest.rpartition(".")
    return f"{part}.{renamed.get(module, module)}.{param}"


def open_clip_state(text: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel weights -> OpenCLIP's text tower (without the `cond_stage_model.model.` prefix),
    with the extra last resblock, the text projection and the logit scale the published checkpoints hold."""
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": text["embeddings.token_embedding.weight"],
        "positional_embedding": text["embeddings.position_embedding.weight"],
        "ln_final.weight": text["final_layer_norm.weight"],
        "ln_final.bias": text["final_layer_norm.bias"],
    }
    renamed = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = sorted({int(m[1]) for k in text if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            stacked = [text[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(stacked)
            out[f"{dst}attn.out_proj.{kind}"] = text[f"{src}self_attn.out_proj.{kind}"]
            for diffusers_name, ldm_name in renamed.items():
                out[f"{dst}{ldm_name}.{kind}"] = text[f"{src}{diffusers_name}.{kind}"]
    generator = torch.Generator().manual_seed(seed)
    device = out["ln_final.weight"].device

    def random(*shape: int) -> torch.Tensor:  # on the meta device for a meta model: shapes only
        return torch.empty(shape, device=device) if device.type == "meta" else torch.randn(shape, generator=generator)

    last, extra = f"transformer.resblocks.{layers[-1]}.", f"transformer.resblocks.{layers[-1] + 1}."
    for name in [k for k in out if k.startswith(last)]:
        out[extra + name[len(last) :]] = random(*out[name].shape)  # unused by SD-2
    width = out["ln_final.weight"].shape[0]
    out["text_projection"] = random(width, width)
    out["logit_scale"] = torch.tensor(4.6052, device=device)
    return out


def _config(component_dir: Path) -> dict:
    return json.loads((component_dir / "config.json").read_text())


def ldm_from_components(
    unet: dict[str, torch.Tensor],
    unet_config: dict,
    vae: dict[str, torch.Tensor],
    vae_config: dict,
    text_encoder: dict[str, torch.Tensor],
    text: TextLayout,
) -> dict[str, torch.Tensor]:
    """Diffusers components' state dicts (any device, meta included) under their LDM names."""
    up_attention = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    state: dict[str, torch.Tensor] = {}
    for key, value in unet.items():
        state["model.diffusion_model." + unet_key(key, unet_config["layers_per_block"], up_attention)] = value
    for key, value in vae.items():
        ldm = vae_key(key, len(vae_config["up_block_types"]))
        attention = ".mid.attn_1." in ldm and value.ndim == 2  # LDM's attention projections are 1x1 convolutions
        state["first_stage_model." + ldm] = value[:, :, None, None] if attention else value
    encoder = {k.removeprefix("text_model."): v for k, v in text_encoder.items()}  # either transformers layout
    if text == "clip":
        state |= {f"cond_stage_model.transformer.text_model.{k}": v for k, v in encoder.items()}
        positions = encoder["embeddings.position_embedding.weight"].shape[0]
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    else:
        state |= {f"cond_stage_model.model.{k}": v for k, v in open_clip_state(encoder).items()}
    # The DDPM schedule buffers LDM checkpoints carry beside the modules (diffusers ignores them).
    state["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)
    return state


def ldm_state_dict(pipeline_dir: Path, text: TextLayout) -> dict[str, torch.Tensor]:
    """Every weight of a diffusers pipeline directory (plain safetensors files) under its LDM name."""
    state = ldm_from_components(
        load_file(pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"),
        _config(pipeline_dir / "unet"),
        load_file(pipeline_dir / "vae" / "diffusion_pytorch_model.safetensors"),
        _config(pipeline_dir / "vae"),
        load_file(pipeline_dir / "text_encoder" / "model.safetensors"),
        text,
    )
    return {k: v.contiguous() for k, v in state.items()}


def write_single_file(pipeline_dir: Path, path: Path, text: TextLayout, global_step: int | None = None) -> Path:
    """`pipeline_dir` as one LDM-layout checkpoint: .safetensors, or .ckpt as Lightning saves it (torch.save of
    {"state_dict": ..., "global_step": ...})."""
    state = ldm_state_dict(pipeline_dir, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state, "global_step": global_step if global_step is not None else 1000}, path)
    return path
