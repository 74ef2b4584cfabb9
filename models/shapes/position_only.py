"""Position-only sanity run (EXPERIMENTS.md, run 5 probe): can the shipped U-Net architecture place a shape
from text at all?

Every scene is a large red solid circle on white; only the position varies (five values, named in 80% of
captions as in the full dataset). A fresh U-Net and text encoder of the shipped architecture train on the
shipped VAE's latents with the shipped loss; then 8 samples per position (DDIM 25, guidance 5) are judged.
`--t-sampling high` draws half of each batch's timesteps from [600, 1000), where only the prompt can decide
the layout. Prints one `RESULT` line and the judged positions.

    python -m models.shapes.position_only --steps 400 --t-sampling high
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from models.shapes.architecture import BackboneConfig, build_scheduler, build_text_encoder, build_unet
from models.shapes.dataset import caption, make_batch, sample_scene
from models.shapes.diffusion_loss import min_snr_loss, sample_timesteps
from models.shapes.judge import ShapesJudge
from models.shapes.paths import PIPELINE_DIR
from models.shapes.train_backbone import encode_latents
from models.shapes.training_utils import cosine_lr
from models.shapes.vocabulary import ATTRIBUTES

PINNED = {"shape": "circle", "color": "red", "fill": "solid", "size": "large", "background": "white"}
HIGH_NOISE_FROM = 600
SAMPLES_PER_POSITION = 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--t-sampling", choices=["uniform", "high"], default="uniform")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    base = StableDiffusionPipeline.from_pretrained(PIPELINE_DIR, local_files_only=True)
    scenes = [replace(sample_scene(rng), **PINNED) for _ in range(3000)]
    latents = encode_latents(base.vae, make_batch(len(scenes), 1, scenes=scenes).images)
    tokenizer = base.tokenizer
    cfg = BackboneConfig()
    text_encoder = build_text_encoder(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet = build_unet(cfg)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * cosine_lr(step, args.steps, 50)
        idx = rng.integers(len(latents), size=args.batch)
        texts = ["" if rng.random() < 0.15 else caption(scenes[i], rng)[0] for i in idx]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        x0 = latents[torch.from_numpy(idx)]
        noise = torch.randn_like(x0)
        t = sample_timesteps(args.batch, 1000, 0.5 if args.t_sampling == "high" else 0.0, HIGH_NOISE_FROM)
        pred = unet(noise_scheduler.add_noise(x0, noise, t), t, text_encoder(ids.input_ids).last_hidden_state).sample
        loss = min_snr_loss(noise_scheduler, pred, x0, noise, t, 5.0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.time() - started:.0f}s", flush=True)

    unet.eval()
    text_encoder.eval()
    pipe = StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    wanted = [p for p in ATTRIBUTES["position"] for _ in range(SAMPLES_PER_POSITION)]
    prompts = [f"a large red solid circle on a white background, {p}" for p in wanted]
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    with torch.no_grad():
        images = pipe(prompts, num_inference_steps=25, guidance_scale=5.0, output_type="np", generator=generators)
    labels = ShapesJudge.load()((np.clip(images.images, 0, 1) * 255).round().astype(np.uint8)).labels
    accuracy = np.mean([label["position"] == want for label, want in zip(labels, wanted, strict=True)])
    print(
        f"RESULT steps={args.steps} t={args.t_sampling} batch={args.batch} position_accuracy={accuracy:.3f} "
        f"train_s={time.time() - started:.0f}",
        flush=True,
    )
    print([label["position"] for label in labels])


if __name__ == "__main__":
    main()
