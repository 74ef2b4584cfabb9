"""Random but valid adapter files for a backbone (LoRA with peft keys, diffusers textual inversion, VPT):
what the hot-load and memory benchmarks upload, and the example load-test workload's adapters.

`python -m service.bench.adapter_files --out deploy/loadtest/adapters` writes the example's files for the
shipped model; they are small and regenerated on demand rather than committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from adapters import BackboneSpec, VPTAdapter, build_spec, vpt_to_bytes
from export.backbone import load_backbone
from service.core.settings import DEFAULT_MODEL_DIR


def load_spec(model_dir: Path) -> BackboneSpec:
    """The spec a server on `model_dir` computes (default targets)."""
    backbone = load_backbone(model_dir)
    return build_spec(backbone.unet, backbone.text_encoder)


def lora_bytes(spec: BackboneSpec, seed: int, rank: int = 4, scale: float = 0.05) -> bytes:
    """peft / diffusers keys on every U-Net target, no metadata (alpha = rank, as diffusers loads it)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for t in spec.targets("unet"):
        tensors[f"{t.name}.lora_A.weight"] = scale * torch.randn(rank, t.d_in, generator=g)
        tensors[f"{t.name}.lora_B.weight"] = scale * torch.randn(t.d_out, rank, generator=g)
    return safetensors_bytes(tensors)


def ti_bytes(spec: BackboneSpec, token: str, seed: int, vectors: int = 2) -> bytes:
    """diffusers' `learned_embeds.safetensors`: {token: [vectors, D]}."""
    g = torch.Generator().manual_seed(seed)
    return safetensors_bytes({token: torch.randn(vectors, spec.token_embedding_dim, generator=g)})


def vpt_bytes(spec: BackboneSpec, seed: int, tokens: int = 2) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return vpt_to_bytes(
        VPTAdapter("deep", [torch.randn(tokens, d, generator=g) for d in spec.vpt_dims], spec.fingerprint)
    )


def write_example(spec: BackboneSpec, out: Path, loras: int = 2) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {f"lora-{i}.safetensors": lora_bytes(spec, seed=i) for i in range(loras)}
    files["ti-shiny.safetensors"] = ti_bytes(spec, "<shiny>", seed=100)
    if spec.vpt_blocks:
        files["vpt-0.safetensors"] = vpt_bytes(spec, seed=200)
    for name, data in files.items():
        (out / name).write_bytes(data)
    return [out / name for name in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.bench.adapter_files", description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="diffusers pipeline directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--loras", type=int, default=2)
    args = parser.parse_args(argv)
    for path in write_example(load_spec(args.model), args.out, args.loras):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
