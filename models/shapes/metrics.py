"""Quality meters every speed trick is held against: prompt accuracy and Fréchet distance on judge features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg


def prompt_hits(named: Sequence[dict[str, str]], predicted: Sequence[dict[str, str]]) -> list[bool]:
    """Per image: is every attribute named in its prompt what the judge sees?"""
    if len(named) != len(predicted):
        raise ValueError(f"{len(named)} prompts but {len(predicted)} judged images")
    return [all(pred.get(k) == v for k, v in want.items()) for want, pred in zip(named, predicted, strict=True)]


def prompt_accuracy(named: Sequence[dict[str, str]], predicted: Sequence[dict[str, str]]) -> float:
    """Fraction of images whose every attribute named in the prompt is what the judge sees."""
    if not named:
        raise ValueError("prompt accuracy of zero images is undefined")
    return float(np.mean(prompt_hits(named, predicted)))


def attribute_accuracy(named: Sequence[dict[str, str]], predicted: Sequence[dict[str, str]]) -> dict[str, float]:
    """Per attribute: among prompts that name it, the fraction of images where the judge agrees."""
    totals: dict[str, list[bool]] = {}
    for want, pred in zip(named, predicted, strict=True):
        for k, v in want.items():
            totals.setdefault(k, []).append(pred.get(k) == v)
    return {k: float(np.mean(v)) for k, v in sorted(totals.items())}


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [n, d] (the FID formula).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)); needs at least two samples per set.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [n, d] with the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least two samples in each set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Near-singular products (few samples, dead features): regularise as the FID reference code does.
        offset = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(distance, 0.0)  # tiny negative values are round-off
