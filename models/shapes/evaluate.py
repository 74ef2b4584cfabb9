"""`diffplex eval` / `make eval`: the backbone's quality through diffusers' own StableDiffusionPipeline.

Prompts come from the caption templates over the training vocabulary (seeded); each image has its own
seeded generator. The judge scores prompt accuracy, per-attribute accuracy, and the Fréchet distance of
its features between the generated images and fresh rendered images (with the real-vs-real distance at
the same sample size as the floor to read it against).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image
from tqdm import tqdm

from models.shapes.commands.evaluate import main  # parses the command line, then calls run() below
from models.shapes.dataset import make_batch
from models.shapes.judge import JUDGE_WEIGHTS, ShapesJudge
from models.shapes.metrics import attribute_accuracy, frechet_distance, prompt_accuracy


def load_pipeline(model_dir: Path) -> StableDiffusionPipeline:
    if not (model_dir / "model_index.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a diffusers pipeline directory (no model_index.json)")
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch: int
) -> np.ndarray:
    """uint8 [n,H,W,3]; image i is drawn from its own generator seeded with seeds[i]."""
    out = []
    for start in tqdm(range(0, len(prompts), batch), desc="generate", unit="batch"):
        chunk = slice(start, start + batch)
        generators = [torch.Generator().manual_seed(s) for s in seeds[chunk]]
        images = pipe(
            prompt=prompts[chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            output_type="np",
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def save_grid(images: np.ndarray, path: Path, columns: int = 8, scale: int = 2) -> None:
    n = (len(images) // columns) * columns
    rows = images[:n].reshape(n // columns, columns, *images.shape[1:])
    grid = rows.transpose(0, 2, 1, 3, 4).reshape(rows.shape[0] * images.shape[1], columns * images.shape[2], 3)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST).save(path)


def evaluate(
    model_dir: Path, samples: int, steps: int, guidance: float, seed: int, batch: int, judge_path: Path = JUDGE_WEIGHTS
) -> tuple[dict, np.ndarray, list[str]]:
    judge = ShapesJudge.load(judge_path)
    pipe = load_pipeline(model_dir)
    prompts = make_batch(samples, seed=seed)  # training vocabulary only
    real = make_batch(samples, seed=seed + 1)
    real_floor = make_batch(samples, seed=seed + 2)
    started = time.time()
    images = generate(pipe, prompts.captions, [seed * 1_000_000 + i for i in range(samples)], steps, guidance, batch)
    seconds = time.time() - started
    verdict = judge(images)
    real_features = judge(real.images).features
    report = {
        "model": _shown(model_dir),
        "command": f"diffplex eval --samples {samples} --steps {steps} --guidance {guidance} --seed {seed}",
        "samples": samples,
        "steps": steps,
        "guidance": guidance,
        "sampler": "DDIM",
        "prompt_accuracy": prompt_accuracy(prompts.named, verdict.labels),
        "attribute_accuracy": attribute_accuracy(prompts.named, verdict.labels),
        "frechet_distance": frechet_distance(verdict.features, real_features),
        "frechet_distance_real_vs_real": frechet_distance(judge(real_floor.images).features, real_features),
        "generation_seconds": seconds,
    }
    return report, images, prompts.captions


def _shown(path: Path) -> str:
    """The model's path as the report shows it: relative to the working directory when under it, so a committed
    report names no machine's absolute path."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def run(args: argparse.Namespace) -> None:
    """`diffplex eval` once its arguments are parsed (models.shapes.commands.evaluate)."""
    try:
        report, images, captions = evaluate(args.model, args.samples, args.steps, args.guidance, args.seed, args.batch)
    except FileNotFoundError as err:
        raise SystemExit(f"diffplex eval: {err}") from None
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    save_grid(images[:64], args.grid)
    args.grid.with_suffix(".txt").write_text("\n".join(captions[:64]) + "\n")
    print(f"prompt accuracy {report['prompt_accuracy']:.4f} over {args.samples} samples")
    print("attribute accuracy " + " ".join(f"{k}={v:.3f}" for k, v in report["attribute_accuracy"].items()))
    floor = report["frechet_distance_real_vs_real"]
    print(f"Fréchet distance {report['frechet_distance']:.3f} (real vs real {floor:.3f})")
    print(f"report: {args.json}  grid: {args.grid}")


if __name__ == "__main__":
    main()
