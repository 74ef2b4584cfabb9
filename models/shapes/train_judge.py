"""Recipe for the judge: `python -m models.shapes.train_judge` (`make train-judge`).

Trained on fresh dataset images of every attribute value (held-out ones included), with blur, noise
and colour jitter so that it reads generated images (softer, noisier) as reliably as rendered ones.
Accuracy is measured on a fresh seed, clean and degraded, and written to judge.json.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.shapes.commands.train_judge import main  # parses the command line, then calls run() below
from models.shapes.dataset import make_batch
from models.shapes.judge import Judge, ShapesJudge, images_to_input, save_judge
from models.shapes.recipes import JudgeRecipe
from models.shapes.vocabulary import ATTRIBUTE_NAMES, value_index


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur, noise and colour shift on a [n,3,H,W] batch in [0,1]: what generated images look like."""
    n = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    alpha = torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    x = x * (1 - alpha) + blur * alpha
    x = x + torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.05
    x = x + (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.08
    return x.clamp(0, 1)


def targets(scenes: list) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([value_index(name, getattr(s, name)) for s in scenes]) for name in ATTRIBUTE_NAMES}


def accuracy(judge: ShapesJudge, images: np.ndarray, scenes: list) -> dict[str, float]:
    verdict = judge(images)
    return {
        name: float(np.mean([label[name] == getattr(s, name) for label, s in zip(verdict.labels, scenes, strict=True)]))
        for name in ATTRIBUTE_NAMES
    }


def train(recipe: JudgeRecipe, out: Path) -> dict:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    started = time.time()
    data = make_batch(recipe.train_images, seed=recipe.seed, include_held_out=True)
    x_all = images_to_input(data.images)
    y_all = targets(data.scenes)
    model = Judge()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    bar = tqdm(range(recipe.steps), desc="judge", unit="step")
    for _ in bar:
        idx = torch.randint(len(x_all), (recipe.batch,), generator=generator)
        logits = model(degrade(x_all[idx], generator))
        loss = sum(F.cross_entropy(logits[name], y_all[name][idx]) for name in ATTRIBUTE_NAMES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    judge = ShapesJudge(model)
    fresh = make_batch(recipe.eval_images, seed=recipe.seed + 1, include_held_out=True)
    degraded = (degrade(images_to_input(fresh.images), generator) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    report = {
        "recipe": asdict(recipe),
        "minutes": (time.time() - started) / 60,
        "accuracy_fresh": accuracy(judge, fresh.images, fresh.scenes),
        "accuracy_fresh_degraded": accuracy(judge, degraded, fresh.scenes),
    }
    save_judge(model, out, report)
    return report


def run(args: argparse.Namespace) -> None:
    """`diffplex train-judge` once its arguments are parsed (models.shapes.commands.train_judge)."""
    report = train(JudgeRecipe(seed=args.seed, steps=args.steps), args.out)
    for split in ("accuracy_fresh", "accuracy_fresh_degraded"):
        print(split, " ".join(f"{k}={v:.4f}" for k, v in report[split].items()))
    worst = min(report["accuracy_fresh"].values())
    if worst < 0.98:
        raise SystemExit(f"judge below the 98% per-attribute bar on fresh images (worst {worst:.4f})")


if __name__ == "__main__":
    main()
