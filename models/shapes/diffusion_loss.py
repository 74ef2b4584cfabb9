"""The denoising loss the backbone and its adapters train on, for either prediction type of the scheduler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def min_snr_loss(
    scheduler: DDPMScheduler, pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Mean of the per-sample MSE to the scheduler's target, with min-SNR-gamma weights (Hang et al. 2023).

    epsilon target: weight min(snr, gamma) / snr, i.e. min(snr, gamma) times the loss on the clean image.
    v target: min(snr + 1, gamma) / (snr + 1), i.e. min(snr + 1, gamma) times the clean-image loss. The
    paper's v weight, min(snr, gamma) / (snr + 1), sends the clean-image weight to 0 as snr -> 0: with a
    schedule that ends at zero SNR, the steps where the prompt alone must decide the layout then weigh
    ~1e-3 of the rest, and a backbone trained that way never learned position (EXPERIMENTS.md, run 4a).
    Keeping a floor of 1 there (plain v-MSE at high noise, as SD 2 trains) and the cap at low noise
    keeps the min-SNR speed-up without starving the high-noise steps.
    """
    snr = compute_snr(scheduler, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target, weight = noise, torch.clamp(snr, max=gamma) / snr
    elif kind == "v_prediction":
        target, weight = scheduler.get_velocity(x0, noise, t), torch.clamp(snr + 1, max=gamma) / (snr + 1)
    else:
        raise ValueError(f"unsupported prediction_type {kind!r}: expected 'epsilon' or 'v_prediction'")
    return (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
