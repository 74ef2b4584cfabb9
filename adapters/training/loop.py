"""The loop every adapter kind shares: frozen pipeline, latents encoded once, the backbone's own loss.

Min-SNR-5 weighting, AdamW and a warm-up + cosine learning rate, as the backbone recipe
(`models.shapes.train_backbone`) uses, so an adapter is trained the way the backbone it extends was.
There is no caption dropout by default: a word-triggered adapter is meant to act with its prompt, not to learn
unconditional images; `Settings.caption_dropout` turns it on for adapters that are their own trigger.
Each kind hands in its trainable tensors, how captions become `encoder_hidden_states`, and the U-Net call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
from tqdm import tqdm

from adapters.errors import AdapterError
from adapters.training.data import TrainingSet
from models.shapes.diffusion_loss import min_snr_loss
from models.shapes.training_utils import cosine_lr, to_tensor

log = logging.getLogger("adapters.training")  # adapters/training/cli.py writes it to FILE.log

EncodeText = Callable[[list[str]], torch.Tensor]  # captions -> encoder_hidden_states [B, L, D]
Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, ehs) -> prediction
# (x_t, t, captions) -> the frozen backbone's prediction. It takes captions, not the adapter's hidden states:
# an adapter on the text side changes those, and the baseline must not see it.
Baseline = Callable[[torch.Tensor, torch.Tensor, list[str]], torch.Tensor]


@dataclass(frozen=True)
class Settings:
    steps: int
    lr: float
    batch: int
    seed: int = 0
    min_snr_gamma: float = 5.0
    weight_decay: float = 0.0  # adapters start near "no change"; decay would pull TI / VPT vectors to zero
    max_grad_norm: float = 1.0
    log_every: int = 25
    # Share of rows whose caption is replaced by "" and trained towards the frozen backbone's unconditional
    # prediction (needs a baseline). An adapter applies to the uncond rows of guidance too; left untrained there
    # it drifts, and guidance amplifies the drift against the concept (adapters/EXPERIMENTS.md, striped LoRA).
    uncond_fraction: float = 0.0
    # Share of rows whose caption is replaced by "" and trained towards their own image: the usual caption
    # dropout of text-to-image fine-tuning. For an adapter that is its own trigger (a VPT), guidance's uncond
    # rows carry the adapter too, and this teaches them the concept instead of leaving them untrained.
    caption_dropout: float = 0.0

    @property
    def warmup(self) -> int:
        return max(1, min(50, self.steps // 10))

    def check(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise AdapterError(f"--steps and --batch must be at least 1 (got {self.steps}, {self.batch})")
        if not self.lr > 0:
            raise AdapterError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.uncond_fraction < 1.0:
            raise AdapterError(f"--uncond-fraction must be in [0, 1), got {self.uncond_fraction}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise AdapterError(f"--caption-dropout must be in [0, 1), got {self.caption_dropout}")
        if self.caption_dropout and self.uncond_fraction:
            raise AdapterError(
                "--caption-dropout and --uncond-fraction both empty captions, towards the image and towards the "
                "backbone: choose one"
            )


def load_frozen_pipeline(model_dir: Path) -> StableDiffusionPipeline:
    """The backbone with every weight frozen; adapters add their own trainable tensors."""
    if not (Path(model_dir) / "model_index.json").is_file():
        raise AdapterError(f"--model {model_dir}: not a diffusers pipeline directory (no model_index.json)")
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    for part in (pipe.unet, pipe.text_encoder, pipe.vae):
        part.requires_grad_(False)
        part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image_size(pipe: StableDiffusionPipeline) -> int:
    """The resolution the backbone was trained at: latent size times the VAE's downsampling."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> scaled latents, the posterior mean: images are encoded once, not per step."""
    parts = [vae.encode(to_tensor(images[i : i + chunk])).latent_dist.mean for i in range(0, len(images), chunk)]
    return torch.cat(parts) * float(vae.config.scaling_factor)


@torch.no_grad()
def vae_round_trip(vae: AutoencoderKL, images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """uint8 [n, H, W, 3] -> the same images encoded and decoded: the best any adapter's samples can look.

    An adapter is trained towards these latents, so detail the codec loses (a fine texture) is out of reach
    of every adapter kind, whatever its training.
    """
    latents = encode_images(vae, images, chunk) / float(vae.config.scaling_factor)
    decoded = torch.cat([vae.decode(latents[i : i + chunk]).sample for i in range(0, len(latents), chunk)])
    return decoded.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def cached_text(encode: EncodeText) -> EncodeText:
    """Memoize a frozen text path per caption: captions repeat, and LoRA / VPT never change the text side."""
    cache: dict[str, torch.Tensor] = {}

    def run(texts: list[str]) -> torch.Tensor:
        if missing := [t for t in dict.fromkeys(texts) if t not in cache]:
            with torch.no_grad():
                for text, hidden in zip(missing, encode(missing), strict=True):
                    cache[text] = hidden
        return torch.stack([cache[t] for t in texts])

    return run


def train(
    pipe: StableDiffusionPipeline,
    data: TrainingSet,
    params: Sequence[torch.Tensor],
    encode_text: EncodeText,
    denoise: Denoise,
    settings: Settings,
    baseline: Baseline | None = None,
) -> dict[str, float]:
    """Optimize `params` on `data`; returns timing and loss figures for the log / report.

    With `baseline` (the frozen backbone's own prediction), the rows drawn from `data.regular` images are
    trained towards it instead of towards their image: prior preservation by distillation. The adapter then
    learns to leave ordinary prompts as the backbone drew them, rather than re-fitting the few ordinary
    images it was shown.
    """
    settings.check()
    if settings.uncond_fraction and baseline is None:
        raise AdapterError("--uncond-fraction needs --preserve: its rows are trained towards the frozen backbone")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    started = time.time()
    latents = encode_images(pipe.vae, data.images)
    log.info("encoded %d images to latents %s in %.1fs", len(data), tuple(latents.shape), time.time() - started)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    running, loop_started = 0.0, time.time()
    bar = tqdm(range(settings.steps), desc="train", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * cosine_lr(step, settings.steps, settings.warmup)
        idx = rng.integers(len(data), size=settings.batch)
        texts = [data.captions[i][int(rng.integers(len(data.captions[i])))] for i in idx]
        x0 = latents[torch.from_numpy(idx)]
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),))
        distilled = data.regular[idx] if data.regular is not None else np.zeros(len(idx), dtype=bool)
        # Empty-caption rows (the two settings exclude each other): distilled to the backbone with uncond_fraction,
        # towards their own image with caption_dropout. Drawn only then: runs without them keep their random stream.
        if empty_share := settings.uncond_fraction or settings.caption_dropout:
            empty = rng.random(len(idx)) < empty_share
            texts = ["" if drop else text for text, drop in zip(texts, empty, strict=True)]
            if settings.uncond_fraction:
                distilled = distilled | empty
        x_t, hidden = noise_scheduler.add_noise(x0, noise, t), encode_text(texts)
        pred = denoise(x_t, t, hidden)
        replace = None
        if baseline is not None and distilled.any():
            rows = torch.from_numpy(distilled)
            with torch.no_grad():
                captions = [texts[i] for i in np.flatnonzero(distilled)]
                replace = (rows, baseline(x_t[rows], t[rows], captions))
        loss = min_snr_loss(noise_scheduler, pred, x0, noise, t, settings.min_snr_gamma, replace)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if step % settings.log_every == 0 or step + 1 == settings.steps:
            lr = optimizer.param_groups[0]["lr"]
            log.info("step %d loss %.5f (ema %.5f) lr %.2e", step, loss.item(), running, lr)
    seconds = time.time() - loop_started
    return {
        "loss_ema": running,
        "train_seconds": seconds,
        "seconds_per_step": seconds / settings.steps,
        "total_seconds": time.time() - started,
    }


def text_path(pipe: StableDiffusionPipeline) -> EncodeText:
    """The pipeline's text path (tokenizer + CLIP) as it is now, with whatever adapter its encoder carries."""

    def encode(texts: list[str]) -> torch.Tensor:
        tokenizer = pipe.tokenizer
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
        return pipe.text_encoder(torch.tensor(ids["input_ids"])).last_hidden_state

    return encode


def frozen_text(pipe: StableDiffusionPipeline) -> EncodeText:
    """The backbone's own text path, memoized per caption: for adapters that leave the text side alone."""
    return cached_text(text_path(pipe))
