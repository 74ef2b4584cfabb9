"""Helpers shared by the backbone's training stages (and the adapters' training loop)."""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n,H,W,3] -> float [n,3,H,W] in [-1, 1], the range diffusers' VAE works in."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier: linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def foreground_weight(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weight [n,1,H,W]: `weight` where a pixel differs from the image's background.

    Shapes cover 3-12% of an image; unweighted, the background dominates the loss and the autoencoder
    settles on colourless blobs. The background is the per-image median colour (it covers most pixels).
    """
    background = x.flatten(2).median(dim=2).values[:, :, None, None]
    foreground = ((x - background).abs().sum(dim=1, keepdim=True) > 0.3).float()
    return 1.0 + (weight - 1.0) * foreground


def reconstruction_loss(
    vae: AutoencoderKL, x: torch.Tensor, foreground: float, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor, DiagonalGaussianDistribution]:
    """(loss, its foreground-weighted L1 + MSE part, the posterior) of one autoencoder batch."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    err = (recon - x).abs() + (recon - x).pow(2)
    rec = (foreground_weight(x, foreground) * err).mean()
    return rec + kl_weight * posterior.kl().mean(), rec, posterior
