"""The training recipes' settings: the backbone's (`train_backbone.py`) and the judge's (`train_judge.py`).

Plain data, without torch: their command lines (`models.shapes.commands`) show the defaults in `--help`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    train_images: int = 30_000
    vae_images: int = 12_000
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_foreground_weight: float = 10.0
    # Runs 5-7: half the rows at high noise teach position (21% -> 100%); 3,000 steps reach 80.1% prompt
    # accuracy, 5,000 steps 92.2% (run 4, 5,000 uniform steps: 24.6%; 6,000 steps lost position; EXPERIMENTS.md).
    unet_steps: int = 5000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    caption_dropout: float = 0.15
    min_snr_gamma: float = 5.0
    # Share of each batch's rows drawn from t >= high_noise_from, where only the prompt can decide the layout
    # (0 gives uniform t, run 4's recipe, which never learned position).
    high_noise_fraction: float = 0.5
    high_noise_from: int = 600
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    threads: int = 2
    # The last stage (codec_stage.py): the autoencoder learns the held-out values (stripes were a third of
    # round trips, 92% after) with the trained values' latents pinned, so the U-Net stays valid.
    codec_steps: int = 1500
    codec_images: int = 6000


@dataclass(frozen=True)
class JudgeRecipe:
    seed: int = 1234
    train_images: int = 24_000
    eval_images: int = 4_000
    steps: int = 800
    batch: int = 128
    lr: float = 2e-3
    threads: int = 1
