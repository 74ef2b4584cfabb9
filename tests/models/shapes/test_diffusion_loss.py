"""The backbone's loss weights and its timestep sampling, on known inputs."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from models.shapes.architecture import build_scheduler
from models.shapes.diffusion_loss import min_snr_loss, sample_timesteps


def test_uniform_sampling_covers_the_whole_range() -> None:
    torch.manual_seed(0)
    t = sample_timesteps(20_000, 1000)
    assert int(t.min()) < 20 and int(t.max()) > 980
    assert abs(float((t >= 600).float().mean()) - 0.4) < 0.02


def test_a_high_noise_share_moves_that_many_rows_above_the_threshold() -> None:
    torch.manual_seed(0)
    t = sample_timesteps(20_000, 1000, high_fraction=0.5, high_from=600)
    # half the rows are drawn from [600, 1000), the other half uniformly (40% of which land there too)
    assert abs(float((t >= 600).float().mean()) - (0.5 + 0.5 * 0.4)) < 0.02
    assert int(t.max()) < 1000 and int(t.min()) >= 0


@pytest.mark.parametrize(("fraction", "start"), [(-0.1, 600), (1.5, 600), (0.5, 1000), (0.5, -1)])
def test_bad_settings_are_refused(fraction: float, start: int) -> None:
    with pytest.raises(ValueError):
        sample_timesteps(4, 1000, fraction, start)


def test_v_loss_weight_keeps_a_floor_at_high_noise() -> None:
    """At t = 999 (snr ~ 0) the v weight min(snr + 1, 5) / (snr + 1) is 1: plain v-MSE, not ~0."""
    scheduler = DDPMScheduler.from_config(build_scheduler().config)
    x0, noise = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    t = torch.tensor([999])
    target = scheduler.get_velocity(x0, noise, t)
    pred = target + 1.0  # off by exactly 1 everywhere: MSE 1
    assert min_snr_loss(scheduler, pred, x0, noise, t, gamma=5.0).item() == pytest.approx(1.0, rel=1e-3)
