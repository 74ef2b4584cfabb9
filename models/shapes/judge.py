"""The judge: a small CNN that names every attribute of a shapes image, and gives features for FD.

It knows all attribute values, held-out ones included, so it can score adapters that teach them.
Weights live in `judge.safetensors` beside this file; `judge.json` records how it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.shapes.dataset import IMAGE_SIZE
from models.shapes.paths import JUDGE_WEIGHTS
from models.shapes.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES

FEATURE_DIM = 128


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, stride=2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Judge(nn.Module):
    """64x64 RGB -> one logit vector per attribute; `features` is the penultimate layer (FD space)."""

    def __init__(self) -> None:
        super().__init__()
        # Flatten at 8x8 rather than pooling globally: position is an attribute, so keep where things are.
        stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.body = nn.Sequential(stem, _block(32, 48), _block(48, 64), nn.Flatten())
        self.neck = nn.Sequential(nn.Linear(64 * 8 * 8, FEATURE_DIM), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(FEATURE_DIM, len(ATTRIBUTES[name])) for name in ATTRIBUTE_NAMES})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {name: head(f) for name, head in self.heads.items()}


def images_to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [n,64,64,3] (or float in [0,1]) -> the judge's input, float [n,3,64,64] in [0,1]."""
    x = torch.as_tensor(images)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.permute(0, 3, 1, 2).contiguous()


@dataclass
class Verdict:
    """What the judge says about a batch of images."""

    labels: list[dict[str, str]]  # per image: attribute -> predicted value
    features: np.ndarray  # [n, FEATURE_DIM] float64


class ShapesJudge:
    """Loaded judge in eval mode; `judge(images)` -> Verdict."""

    def __init__(self, model: Judge) -> None:
        self.model = model.eval()

    @classmethod
    def load(cls, path: Path = JUDGE_WEIGHTS) -> ShapesJudge:
        if not path.exists():
            raise FileNotFoundError(f"judge weights not found at {path}; train them with `make train-judge`")
        model = Judge()
        model.load_state_dict(load_file(path))
        return cls(model)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 256) -> Verdict:
        if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(
                f"the judge scores {IMAGE_SIZE}x{IMAGE_SIZE} RGB images of the shapes world, got an array of "
                f"shape {images.shape}: judge a model that draws them (models/shapes/pipeline)"
            )
        labels: list[dict[str, str]] = []
        feats = []
        for start in range(0, len(images), batch_size):
            x = images_to_input(images[start : start + batch_size])
            f = self.model.features(x)
            feats.append(f.double().numpy())
            preds = {name: head(f).argmax(-1).tolist() for name, head in self.model.heads.items()}
            labels += [{name: ATTRIBUTES[name][preds[name][i]] for name in ATTRIBUTE_NAMES} for i in range(len(x))]
        features = np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))
        return Verdict(labels=labels, features=features)


def save_judge(model: Judge, path: Path, report: dict) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
