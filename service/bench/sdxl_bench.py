"""`diffplex bench sdxl`: the SDXL engine (PyTorch backend) against diffusers' StableDiffusionXLPipeline running the
same modules, each pair side by side in one run: 1 request, 8 concurrent requests (diffusers: one call per
request, and its static batch of the same 8 prompts), fused vs split CFG, 8 distinct LoRAs vs none, 8 deep VPTs vs
none.

The model is SDXL-base's architecture at its real widths and depths (2.6 B U-Net parameters, two text encoders;
`export/single_file_configs/sdxl-base`, held to the published parameter counts by a test) with random weights, so
no download is needed: the speed of a call does not depend on the weights' values. Images are small (`--size`,
128 px by default, a 16 x 16 latent) so that a run fits a CPU machine; with random weights they are noise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from adapters.formats import load_adapter
from adapters.types import VPTAdapter
from export.backbone import Backbone
from service.bench.adapter_files import lora_bytes
from service.bench.comparators import SplitCFGRuntime
from service.bench.engine_bench import _engine_run, _median_seconds, _prompts
from service.bench.report import machine, table
from service.engine import GenerationRequest
from service.engine.samplers import make_scheduler
from service.runtime.torch_runtime import TorchRuntime

GUIDANCE = 5.0
SAMPLER = "euler"  # SDXL-base's own scheduler
LORA_RANK = 4


def random_sdxl(out: Path, progress: Callable[[str], None], config: Path | None = None) -> Backbone:
    """SDXL-base's components built from the shipped configs (or `config`, a diffusers-layout SDXL directory) with
    random weights (seeded), as a Backbone whose directory holds the configs and tokenizers the host reads."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from export.shipped_configs import SDXL_BASE, materialize_config

    model_dir = config if config is not None else materialize_config(SDXL_BASE, out)
    progress(f"building {model_dir.name} with random weights (SDXL-base: about 14 GB of fp32 parameters)")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(model_dir / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(model_dir / "text_encoder"))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(model_dir / "text_encoder_2"))
    for module in (unet, vae, text_encoder, text_encoder_2):  # fp32, as the runtime serves (the configs say fp16)
        module.to(torch.float32).eval().requires_grad_(False)
    return Backbone(
        model_dir=model_dir,
        unet=unet,
        text_encoder=text_encoder,
        vae=vae,
        scheduler_config=json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text()),
        prediction_type="epsilon",
        text_encoder_2=text_encoder_2,
        force_zeros_for_empty_prompt=True,
    )


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    steps, rounds, side = args.steps, args.rounds, args.size
    with tempfile.TemporaryDirectory() as scratch:
        backbone = random_sdxl(Path(scratch) / "sdxl-base", progress, args.config)
        runtime = TorchRuntime(backbone)
        model_dir = backbone.model_dir
        # diffusers runs the very modules the engine does (the banked layers are the plain ones without banks):
        # one copy of the weights, and both sides compute the same model.
        pipe = StableDiffusionXLPipeline(
            vae=backbone.vae,
            text_encoder=backbone.text_encoder,
            text_encoder_2=backbone.text_encoder_2,
            tokenizer=CLIPTokenizer.from_pretrained(model_dir / "tokenizer"),
            tokenizer_2=CLIPTokenizer.from_pretrained(model_dir / "tokenizer_2"),
            unet=backbone.unet,
            scheduler=make_scheduler(SAMPLER, backbone.scheduler_config, steps),
        )
        pipe.set_progress_bar_config(disable=True)
        spec = runtime.info.spec
        prompts = _prompts(8)
        results: dict = {
            "machine": machine(),
            "runtime": runtime.name,
            "steps": steps,
            "rounds": rounds,
            "size": side,
            "model": "SDXL-base (export/single_file_configs/sdxl-base)" if args.config is None else str(args.config),
            "vpt_blocks": len(spec.vpt_blocks),
            "lora_targets": len(spec.targets("unet")),
        }

        def requests(n: int, adapters: list | None = None) -> Callable[[], list[GenerationRequest]]:
            def make() -> list[GenerationRequest]:
                return [
                    GenerationRequest(
                        prompts[i],
                        seed=i,
                        steps=steps,
                        guidance_scale=GUIDANCE,
                        sampler=SAMPLER,
                        width=side,
                        height=side,
                        adapters=((adapters[i], 1.0),) if adapters else (),
                    )
                    for i in range(n)
                ]

            return make

        def diffusers_call(n: int, batched: bool) -> Callable[[], object]:
            def run_pipe() -> None:
                groups = [list(range(n))] if batched else [[i] for i in range(n)]
                for group in groups:
                    pipe(
                        [prompts[i] for i in group],
                        height=side,
                        width=side,
                        num_inference_steps=steps,
                        guidance_scale=GUIDANCE,
                        generator=[torch.Generator().manual_seed(i) for i in group],
                        output_type="np",
                    )

            return run_pipe

        engine = {"max_rows": 16}
        progress("engine vs diffusers, 1 request")
        s = _median_seconds(
            {"engine": _engine_run(runtime, requests(1), **engine), "diffusers": diffusers_call(1, False)}, rounds
        )
        results["vs_diffusers_1"] = {"seconds": s, "ratio": s["diffusers"] / s["engine"]}
        progress("engine vs diffusers, 8 concurrent requests")
        s = _median_seconds(
            {
                "engine": _engine_run(runtime, requests(8), **engine),
                "diffusers_sequential": diffusers_call(8, False),
                "diffusers_batched": diffusers_call(8, True),
            },
            rounds,
        )
        results["vs_diffusers_8"] = {
            "seconds": s,
            "ratio": s["diffusers_sequential"] / s["engine"],
            "ratio_vs_batched": s["diffusers_batched"] / s["engine"],
        }
        progress("fused vs split CFG, 8 requests")
        s = _median_seconds(
            {
                "fused": _engine_run(runtime, requests(8), **engine),
                "split": _engine_run(SplitCFGRuntime(runtime), requests(8), **engine),
            },
            rounds,
        )
        results["fused_vs_split"] = {"seconds": s, "ratio": s["split"] / s["fused"]}
        progress("8 distinct LoRAs (rank 4, every U-Net target) and 8 deep VPTs vs no adapters, 8 requests")
        loras = [load_adapter(lora_bytes(spec, seed=100 + i, rank=LORA_RANK)) for i in range(8)]
        g = torch.Generator().manual_seed(0)
        tokens = runtime.info.vpt_tokens
        vpts = [
            VPTAdapter("deep", [torch.randn(tokens, d, generator=g) for d in spec.vpt_dims], spec.fingerprint)
            for _ in range(8)
        ]
        s = _median_seconds(
            {
                "no_adapters": _engine_run(runtime, requests(8), **engine),
                "eight_loras": _engine_run(runtime, requests(8, loras), **engine),
                "eight_vpts": _engine_run(runtime, requests(8, vpts), **engine),
            },
            rounds,
        )
        results["adapters"] = {
            "seconds": s,
            "loras_vs_none": s["no_adapters"] / s["eight_loras"],
            "vpts_vs_none": s["no_adapters"] / s["eight_vpts"],
            "vpt_tokens": tokens,
        }
    return results


def markdown(results: dict, command: str) -> str:
    r = results
    side = r["size"]
    lines = [
        "## SDXL (`diffplex bench sdxl`)",
        "",
        f"Machine: {r['machine']}; runtime {r['runtime']} (the engine) and diffusers' StableDiffusionXLPipeline on the "
        f"same modules; {r['model']}: the architecture at its real widths and depths with random weights, "
        f"{side}x{side} px images ({side // 8}x{side // 8} latents), Euler "
        f"{r['steps']} steps, guidance {GUIDANCE}; median of {r['rounds']} interleaved round(s) after a warm-up. "
        f"Command: `{command}`.",
        "",
    ]
    rows = [
        ["engine vs diffusers, 1 request", f"{r['vs_diffusers_1']['ratio']:.2f}x", "≥ 1.5x"],
        [
            "engine vs diffusers, 8 concurrent requests (diffusers: one call per request)",
            f"{r['vs_diffusers_8']['ratio']:.2f}x",
            "≥ 2x",
        ],
        [
            "engine vs diffusers' static batch of the same 8 prompts",
            f"{r['vs_diffusers_8']['ratio_vs_batched']:.2f}x",
            "",
        ],
        ["fused vs split CFG, 8 requests", f"{r['fused_vs_split']['ratio']:.2f}x", ""],
        [
            f"8 distinct rank-{LORA_RANK} LoRAs in one batch vs no adapters ({r['lora_targets']} U-Net targets)",
            f"{r['adapters']['loras_vs_none']:.2f}x",
            "≥ 0.85x",
        ],
        [
            f"8 distinct deep VPTs ({r['adapters']['vpt_tokens']} tokens in each of {r['vpt_blocks']} blocks) "
            "vs no adapters",
            f"{r['adapters']['vpts_vs_none']:.2f}x",
            "",
        ],
    ]
    lines.append(table(["ratio (higher is better for the first side)", "measured", "target"], rows))
    return "\n".join(lines) + "\n"
