"""The denoising loss the backbone and its adapters train on, for either prediction type of the scheduler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def min_snr_loss(
    scheduler: DDPMScheduler,
    pred: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    gamma: float,
    replace: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean of the per-sample MSE to the scheduler's target, with min-SNR-gamma weights (Hang et al. 2023).

    epsilon target: weight min(snr, gamma) / snr, i.e. min(snr, gamma) times the loss on the clean image.
    v target: min(snr + 1, gamma) / (snr + 1), i.e. min(snr + 1, gamma) times the clean-image loss. The
    paper's v weight, min(snr, gamma) / (snr + 1), sends the clean-image weight to 0 as snr -> 0: with a
    schedule that ends at zero SNR, the steps where the prompt alone must decide the layout then weigh
    ~1e-3 of the rest, and a backbone trained that way never learned position (EXPERIMENTS.md, run 4a).
    Keeping a floor of 1 there (plain v-MSE at high noise, as SD 2 trains) and the cap at low noise
    keeps the min-SNR speed-up without starving the high-noise steps.

    `replace` = (rows [B] bool, targets [rows, ...]): those rows' targets are given instead (an adapter's
    prior preservation distils them to the frozen backbone's own prediction), with the same weights.
    """
    snr = compute_snr(scheduler, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target, weight = noise, torch.clamp(snr, max=gamma) / snr
    elif kind == "v_prediction":
        target, weight = scheduler.get_velocity(x0, noise, t), torch.clamp(snr + 1, max=gamma) / (snr + 1)
    else:
        raise ValueError(f"unsupported prediction_type {kind!r}: expected 'epsilon' or 'v_prediction'")
    if replace is not None:
        rows, given = replace
        target = target.clone()
        target[rows] = given
    return (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()


def sample_timesteps(
    batch: int, num_train_timesteps: int, high_fraction: float = 0.0, high_from: int = 600
) -> torch.Tensor:
    """Uniform timesteps, except that a `high_fraction` share of the rows is drawn from [high_from, T).

    At high noise only the prompt can decide the layout; a position-only run learned position perfectly in
    1,200 steps with half its rows there (EXPERIMENTS.md, run 5 probe). Rows are chosen by a coin per row.
    """
    if not 0.0 <= high_fraction <= 1.0:
        raise ValueError(f"high_fraction must be in [0, 1], got {high_fraction}")
    if not 0 <= high_from < num_train_timesteps:
        raise ValueError(f"high_from must be in [0, {num_train_timesteps}), got {high_from}")
    t = torch.randint(0, num_train_timesteps, (batch,))
    if high_fraction > 0:
        high = torch.rand(batch) < high_fraction
        t[high] = torch.randint(high_from, num_train_timesteps, (int(high.sum()),))
    return t
