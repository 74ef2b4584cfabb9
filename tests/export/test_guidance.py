"""The one CFG combination: its definition per row, its dtype, and the fused-CFG graph computing exactly it."""

from __future__ import annotations

import torch
from torch import nn

from export.graphs import fused_cfg
from export.guidance import classifier_free_guidance


def predictions(rows: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, 8, 8, generator=g), torch.randn(rows, 4, 8, 8, generator=g)


def test_scale_one_is_the_cond_prediction_and_zero_the_uncond() -> None:
    cond, uncond = predictions()
    assert torch.allclose(classifier_free_guidance(cond, uncond, torch.ones(3)), cond, atol=1e-6)  # up to rounding
    assert torch.equal(classifier_free_guidance(cond, uncond, torch.zeros(3)), uncond)


def test_each_row_gets_its_own_scale() -> None:
    cond, uncond = predictions()
    scales = torch.tensor([1.5, 5.0, 7.3])
    both = classifier_free_guidance(cond, uncond, scales)
    for i, scale in enumerate(scales.tolist()):
        alone = uncond[i] + scale * (cond[i] - uncond[i])
        assert torch.equal(both[i], alone)


def test_fp16_predictions_stay_fp16() -> None:
    cond, uncond = (p.half() for p in predictions())
    assert classifier_free_guidance(cond, uncond, torch.tensor([2.0, 3.0, 4.0])).dtype == torch.float16


class _ToyUNet(nn.Module):
    """A deterministic stand-in with the U-Net's call signature: output depends on every input, per row."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, return_dict: bool) -> tuple:
        return (sample * timestep.view(-1, 1, 1, 1) + context.mean(dim=(1, 2)).view(-1, 1, 1, 1),)


def test_the_fused_graph_combines_its_halves_with_the_shared_function() -> None:
    g = torch.Generator().manual_seed(1)
    sample, cond, uncond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    timestep, scales = torch.tensor([10.0, 500.0]), torch.tensor([4.0, 7.5])
    unet = _ToyUNet()
    want = classifier_free_guidance(
        unet(sample, timestep, cond, False)[0], unet(sample, timestep, uncond, False)[0], scales
    )
    assert torch.equal(fused_cfg(unet, sample, timestep, cond, uncond, scales), want)
