"""Recipe for the embedded default backbone: `python -m models.shapes.train_backbone` (`make train-backbone`).

Stages, each a pure function of the seed:
1. a CLIP tokenizer learned from the captions;
2. the KL autoencoder (L1 + MSE + a tiny KL term) on its own image set, then its latent scaling factor;
3. the training set encoded once to latents (the autoencoder is frozen for the U-Net stage);
4. U-Net and text encoder trained jointly on v-prediction with min-SNR weighting, caption dropout
   (so classifier-free guidance works) and an EMA of the weights, which is what gets saved;
5. the codec stage (`codec_stage.py`): the autoencoder learns the held-out values while the latents of
   the values the U-Net was trained on stay pinned (`--only-codec-stage` runs it on a trained pipeline).

Held-out attributes (vocabulary.HELD_OUT) are excluded from the tokenizer, the U-Net and the text
encoder. The autoencoder is a codec, not a concept learner: it sees every value, so that an adapter
teaching a held-out value (striped fill, the night sky) has latents that can carry it. The result is a diffusers
`StableDiffusionPipeline` directory; `training.json` beside it records the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.shapes.architecture import BackboneConfig, build_scheduler, build_text_encoder, build_unet, build_vae
from models.shapes.codec_stage import CodecStage, shows_only_trained_values, teach_held_out
from models.shapes.commands.train_backbone import main  # parses the command line, then calls run() below
from models.shapes.dataset import Batch, caption, make_batch, trained_words
from models.shapes.diffusion_loss import min_snr_loss, sample_timesteps
from models.shapes.paths import PIPELINE_DIR as PIPELINE_DIR  # re-exported: its importers found it here
from models.shapes.recipes import Recipe
from models.shapes.tokenizer import write_clip_tokenizer, write_trained_words
from models.shapes.training_utils import cosine_lr, reconstruction_loss, to_tensor

log = logging.getLogger("train_backbone")


def render_training_set(count: int, seed: int, include_held_out: bool = False) -> Batch:
    """`count` images in chunks of 1000, chunk k seeded `seed + 1000 k` (so a prefix is the same set)."""
    chunks = []
    for start in tqdm(range(0, count, 1000), desc="render", unit="k images"):
        chunks.append(make_batch(min(1000, count - start), seed=seed + start, include_held_out=include_held_out))
    return Batch(
        images=np.concatenate([c.images for c in chunks]),
        scenes=[s for c in chunks for s in c.scenes],
        captions=[t for c in chunks for t in c.captions],
        named=[n for c in chunks for n in c.named],
    )


def train_vae(vae: AutoencoderKL, images: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> dict[str, float]:
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    vae.train()
    bar = tqdm(range(recipe.vae_steps), desc="vae", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = recipe.vae_lr * cosine_lr(step, recipe.vae_steps, recipe.warmup_steps)
        x = to_tensor(images[rng.integers(len(images), size=recipe.vae_batch)])
        loss, rec, _ = reconstruction_loss(vae, x, recipe.vae_foreground_weight, recipe.vae_kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if step % 100 == 0 or step == recipe.vae_steps - 1:
            log.info("vae step %d rec %.5f", step, rec.item())
    vae.eval()
    return {"vae_final_rec_loss": float(rec.item())}


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray) -> torch.Tensor:
    chunks = tqdm(range(0, len(images), 500), desc="encode")
    return torch.cat([vae.encode(to_tensor(images[i : i + 500])).latent_dist.mean for i in chunks])


def save_pipeline(out_dir: Path, tokenizer_dir: Path, tokenizer, text_encoder, vae, unet) -> None:
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # transformers 5 saves only tokenizer.json; keep CLIP's classic pair
        shutil.copy(tokenizer_dir / name, out_dir / "tokenizer" / name)
    write_trained_words(out_dir / "tokenizer", trained_words())


def vae_stage_key(recipe: Recipe, cfg: BackboneConfig) -> dict:
    """Everything the autoencoder stage depends on: a cached VAE is reused only when all of it matches."""
    fields = (
        "seed",
        "train_images",
        "vae_images",
        "vae_steps",
        "vae_batch",
        "vae_lr",
        "vae_kl_weight",
        "vae_foreground_weight",
        "warmup_steps",
        "threads",
    )
    return {
        "recipe": {f: getattr(recipe, f) for f in fields},
        "vae_channels": list(cfg.vae_channels),
        "latent_channels": cfg.latent_channels,
    }


def autoencoder_stage(
    recipe: Recipe, cfg: BackboneConfig, data: Batch, cache_dir: Path
) -> tuple[AutoencoderKL, torch.Tensor, dict]:
    """The trained VAE (scaling factor set) and the training set's scaled latents.

    Loaded from `cache_dir` when an earlier run trained the same stage (see `vae_stage_key`).
    """
    key = vae_stage_key(recipe, cfg)
    key_file = cache_dir / "stage_key.json"
    if key_file.exists() and json.loads(key_file.read_text()) == key:
        log.info("autoencoder stage: reusing %s", cache_dir)
        stats = json.loads((cache_dir / "stage_stats.json").read_text()) | {"vae_reused_from_cache": True}
        vae = AutoencoderKL.from_pretrained(cache_dir).eval()
        latents_file = cache_dir / "latents.safetensors"
        if latents_file.exists():
            latents = load_file(latents_file)["latents"]
        else:
            latents = encode_latents(vae, data.images) * vae.config.scaling_factor
        return vae, latents, stats
    started = time.time()
    vae = build_vae(cfg)
    # Its own seed range, far from the U-Net set's, and every attribute value (see the module docstring).
    codec_seed = recipe.seed * 1_000_003 + 500_000_000
    codec_set = render_training_set(recipe.vae_images, codec_seed, include_held_out=True)
    stats = train_vae(vae, codec_set.images, recipe, np.random.default_rng(recipe.seed))
    latents = encode_latents(vae, data.images)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    stats["vae_minutes"] = (time.time() - started) / 60
    vae.save_pretrained(cache_dir, safe_serialization=True)
    save_file({"latents": latents.contiguous()}, cache_dir / "latents.safetensors")
    (cache_dir / "stage_stats.json").write_text(json.dumps(stats))
    key_file.write_text(json.dumps(key))
    return vae, latents, stats


def codec_stage(vae: AutoencoderKL, recipe: Recipe) -> dict:
    """The recipe's last stage on the trained `vae`, in place (see `codec_stage.py`); returns its stats."""
    started = time.time()
    stage = CodecStage(steps=recipe.codec_steps, seed=recipe.seed + 2)
    # Its own seed range, apart from the U-Net set's (seed * 1_000_003) and the autoencoder's (+ 500_000_000).
    codec_set = render_training_set(recipe.codec_images, recipe.seed * 1_000_003 + 700_000_000, include_held_out=True)
    trained = np.array([shows_only_trained_values(scene) for scene in codec_set.scenes])
    check = make_batch(256, seed=recipe.seed * 1_000_003 + 800_000_000)  # trained values only, unseen images
    stats = teach_held_out(vae, codec_set.images, trained, stage, check.images)
    stats["codec_minutes"] = (time.time() - started) / 60
    log.info("codec stage: %s", stats)
    return stats


def train(recipe: Recipe, cfg: BackboneConfig, out_dir: Path, work_dir: Path) -> dict:
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    started = time.time()
    stats: dict = {"recipe": asdict(recipe), "config": asdict(cfg)}

    data = render_training_set(recipe.train_images, recipe.seed * 1_000_003)
    tokenizer = write_clip_tokenizer(data.captions + [""], work_dir / "tokenizer")
    log.info("tokenizer: %d tokens", len(tokenizer))

    vae, latents, vae_stats = autoencoder_stage(recipe, cfg, data, work_dir / "vae-stage")
    stats.update(vae_stats)
    vae.requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    stats["vae_scaling_factor"] = scaling
    log.info("latents %s, scaling factor %.4f", tuple(latents.shape), scaling)

    # The diffusion stage draws from its own seed, so it is the same whether the VAE was trained or reused.
    torch.manual_seed(recipe.seed + 1)
    rng = np.random.default_rng(recipe.seed + 1)
    unet_started = time.time()
    text_encoder = build_text_encoder(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet = build_unet(cfg)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.unet_lr, weight_decay=0.01)
    ema = EMAModel(params, decay=recipe.ema_decay, use_ema_warmup=True, power=0.75)
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    unet.train()
    text_encoder.train()
    bar = tqdm(range(recipe.unet_steps), desc="unet", unit="step")
    running = 0.0
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = recipe.unet_lr * cosine_lr(step, recipe.unet_steps, recipe.warmup_steps)
        idx = rng.integers(len(latents), size=recipe.unet_batch)
        # Fresh captions each time: the same image is seen under different partial descriptions.
        texts = [caption(data.scenes[i], rng)[0] for i in idx]
        texts = ["" if rng.random() < recipe.caption_dropout else t for t in texts]
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        x0 = latents[torch.from_numpy(idx)]
        noise = torch.randn_like(x0)
        t = sample_timesteps(
            len(idx), noise_scheduler.config.num_train_timesteps, recipe.high_noise_fraction, recipe.high_noise_from
        )
        xt = noise_scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, text_encoder(ids).last_hidden_state).sample
        loss = min_snr_loss(noise_scheduler, pred, x0, noise, t, recipe.min_snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.step(params)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 100 == 0:
            log.info("unet step %d loss %.5f (ema of loss %.5f)", step, loss.item(), running)
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.unet_steps:
            ema.store(params)
            ema.copy_to(params)
            target = out_dir if step + 1 == recipe.unet_steps else work_dir / f"checkpoint-{step + 1}"
            save_pipeline(target, work_dir / "tokenizer", tokenizer, text_encoder, vae, unet)
            ema.restore(params)
            log.info("saved %s", target)
    stats["unet_final_loss_ema"] = running
    stats["unet_minutes"] = (time.time() - unet_started) / 60
    if recipe.codec_steps:
        stats.update(codec_stage(vae, recipe))
        vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    stats["minutes"] = (time.time() - started) / 60
    stats["parameters"] = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in {"unet": unet, "vae": vae, "text_encoder": text_encoder}.items()
    }
    (out_dir / "training.json").write_text(json.dumps(stats, indent=2))
    return stats


def codec_stage_on_pipeline(pipeline_dir: Path, work_dir: Path, steps: int, images: int) -> dict:
    """Run the codec stage on a pipeline trained before the stage existed, with its recorded recipe.

    The stage comes after the U-Net stage and draws from its own seeds, so the result is what the full
    recipe makes. The pipeline is replaced only once the stage has finished.
    """
    record = pipeline_dir / "training.json"
    if not record.exists() or not (pipeline_dir / "vae").is_dir():
        raise ValueError(f"{pipeline_dir} is not a pipeline this recipe trained (no training.json or vae/)")
    stats = json.loads(record.read_text())
    if "codec_final_rec_loss" in stats:
        raise ValueError(f"the codec stage already ran on {pipeline_dir} (training.json records it)")
    if steps < 1:
        raise ValueError("--only-codec-stage needs --codec-steps >= 1")
    recipe = Recipe(**(stats["recipe"] | {"codec_steps": steps, "codec_images": images}))
    torch.set_num_threads(recipe.threads)
    staging = work_dir / "pipeline"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(pipeline_dir, staging)
    vae = AutoencoderKL.from_pretrained(staging / "vae").eval()
    stats.update(codec_stage(vae, recipe))
    stats["recipe"] = asdict(recipe)
    stats["minutes"] += stats["codec_minutes"]
    vae.save_pretrained(staging / "vae", safe_serialization=True)
    (staging / "training.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(pipeline_dir)
    shutil.move(staging, pipeline_dir)
    return stats


def run(args: argparse.Namespace) -> None:
    """`diffplex train-backbone` once its arguments are parsed (models.shapes.commands.train_backbone)."""
    args.work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.FileHandler(args.work / "train_backbone.log")],
    )
    if args.only_codec_stage:
        try:
            stats = codec_stage_on_pipeline(args.out, args.work, args.codec_steps, args.codec_images)
        except ValueError as err:
            raise SystemExit(f"diffplex train-backbone: {err}") from None
        print(json.dumps({k: v for k, v in stats.items() if k.startswith("codec")}, indent=2))
        return
    recipe = Recipe(
        seed=args.seed,
        unet_steps=args.unet_steps,
        high_noise_fraction=args.high_noise_fraction,
        vae_steps=args.vae_steps,
        train_images=args.train_images,
        vae_images=args.vae_images,
        codec_steps=args.codec_steps,
        codec_images=args.codec_images,
    )
    # Train into scratch and swap at the end: an interrupted run never leaves the shipped model half-written.
    staging = args.work / "pipeline"
    if staging.exists():
        shutil.rmtree(staging)
    stats = train(recipe, BackboneConfig(), staging, args.work)
    shutil.copy(args.work / "train_backbone.log", staging / "train_backbone.log")
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.move(staging, args.out)
    print(json.dumps({k: v for k, v in stats.items() if k not in ("recipe", "config")}, indent=2))


if __name__ == "__main__":
    main()
