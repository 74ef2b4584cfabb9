"""`diffplex adapters train {lora,ti,vpt}` and `diffplex adapters eval`: argument parsing, logging, reports.

Bad input (arguments, image folders, captions, model directories) exits with code 2 and one line saying
what to change; everything a run did goes to a log file beside the adapter (`FILE.log`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter_file, write_vpt
from adapters.spec import build_spec
from adapters.training.data import CONCEPTS, TrainingSet, concept, concept_set, folder_set
from adapters.training.evaluate import KIND_NAMES, evaluate_adapter, load_trained
from adapters.training.loop import Settings, image_size, load_frozen_pipeline, log
from adapters.training.lora import LORA_TARGETS, MAX_RANK, save_lora, train_lora
from adapters.training.ti import MAX_VECTORS, save_ti, train_ti
from adapters.training.vpt import DEPTHS, MAX_TOKENS, train_vpt
from adapters.validate import ExportLimits, validate
from models.shapes.train_backbone import PIPELINE_DIR

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class KindDefaults:
    """Per kind: steps, learning rate, batch, share of regular images mixed into a concept set.

    Sized so a run takes at most ~8 minutes on two free CPU cores with the shapes backbone (see
    adapters/README.md, "Training"). TI needs no regular images: a prompt without its token is untouched.
    """

    steps: int
    lr: float
    batch: int
    regular_fraction: float


DEFAULTS: dict[str, KindDefaults] = {
    # Measured on the shapes backbone (8 latent channels), batch 16, one core shared with another job:
    # TI 0.25 s/step, LoRA 0.32, VPT 0.23; these step counts take 6-6.5 minutes there, less on two free cores.
    "ti": KindDefaults(steps=1500, lr=2e-3, batch=16, regular_fraction=0.0),
    "lora": KindDefaults(steps=1200, lr=1e-3, batch=16, regular_fraction=0.25),
    # A VPT's concept is asked for by loading it (adapters.training.data), so every image shows it.
    "vpt": KindDefaults(steps=1600, lr=1e-2, batch=16, regular_fraction=0.0),
}


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffplex adapters train",
        description="Train a LoRA, textual inversion (ti) or VPT adapter on the frozen backbone.",
    )
    parser.add_argument("kind", choices=list(DEFAULTS), help="adapter kind")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of png/jpg images, each with a same-stem .txt caption")
    source.add_argument("--concept", choices=list(CONCEPTS), help="render a concept of the shapes world")
    parser.add_argument("--out", type=Path, required=True, help="adapter file to write (.safetensors)")
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory (backbone)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default per kind)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default per kind)")
    parser.add_argument("--batch", type=int, help="images per step (default per kind)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=8, help=f"lora: rank, 1 to {MAX_RANK}")
    parser.add_argument(
        "--lora-targets",
        choices=list(LORA_TARGETS),
        help="lora: every banked module (default) or only the cross-attention's keys and values",
    )
    parser.add_argument(
        "--train-text-encoder",
        action="store_true",
        help="lora: also a LoRA on the text encoder, for words the backbone never read",
    )
    parser.add_argument("--tokens", type=int, default=4, help=f"vpt: prompt tokens per block, 1 to {MAX_TOKENS}")
    parser.add_argument("--depth", choices=DEPTHS, default="deep", help="vpt: every transformer block or the first")
    parser.add_argument(
        "--token",
        help="ti: the new token; with --concept it stands where the concept's words would be (default <CONCEPT>); "
        "with --images, the word the captions use for the concept (required)",
    )
    parser.add_argument("--vectors", type=int, default=1, help="ti: vectors per token")
    parser.add_argument(
        "--init-word",
        help="ti: word(s) the vectors start from: as many words as --vectors start one vector each, otherwise "
        "all start at their mean (default per concept)",
    )
    parser.add_argument("--count", type=int, default=512, help="--concept: images to render")
    parser.add_argument("--regular-fraction", type=float, help="--concept: share of ordinary images (default per kind)")
    parser.add_argument(
        "--preserve",
        action="store_true",
        help="lora, vpt: train the ordinary images' rows towards the frozen backbone's prediction (prior preservation)",
    )
    parser.add_argument(
        "--uncond-fraction",
        type=float,
        default=0.0,
        help="lora, vpt with --preserve: share of rows with an empty caption, trained towards the backbone's "
        "unconditional prediction (keeps guidance's uncond branch as the backbone drew it)",
    )
    parser.add_argument(
        "--caption-dropout",
        type=float,
        default=0.0,
        help="share of rows trained with an empty caption towards their own image (for a VPT, which also runs in "
        "guidance's uncond rows)",
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--eval-samples", type=int, default=0, help="after training, evaluate with N samples (0: off)")
    return parser


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffplex adapters eval",
        description="Score an adapter with the judge: concept accuracy and regular prompt accuracy with vs without.",
    )
    parser.add_argument("--kind", choices=list(KIND_NAMES), required=True)
    parser.add_argument("--file", type=Path, required=True, help="adapter file")
    parser.add_argument("--concept", choices=list(CONCEPTS), required=True)
    parser.add_argument("--model", type=Path, default=PIPELINE_DIR, help="diffusers pipeline directory (backbone)")
    parser.add_argument("--samples", type=int, default=128, help="prompts per set (concept, regular)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser


def training_set(args: argparse.Namespace, size: int, token: str | None) -> TrainingSet:
    if args.images is not None:
        return folder_set(args.images, size)
    fraction = DEFAULTS[args.kind].regular_fraction if args.regular_fraction is None else args.regular_fraction
    return concept_set(args.concept, args.count, args.seed, fraction, token)


def ti_token(args: argparse.Namespace) -> str:
    """The token a TI learns: given, or the concept's own (`<emblem>`); a folder's captions need it named."""
    if args.token is not None:
        return args.token
    if args.concept is None:
        raise AdapterError("ti with --images needs --token: the word the captions use for the concept, e.g. '<cat>'")
    return concept(args.concept).token


def _check_sizes(args: argparse.Namespace) -> None:
    """Fail before the backbone loads: ranks and token counts the export could not hold."""
    if not 1 <= args.rank <= MAX_RANK:
        raise AdapterError(f"--rank must be 1 to {MAX_RANK} (the default rank cap), got {args.rank}")
    if not 1 <= args.tokens <= MAX_TOKENS:
        raise AdapterError(f"--tokens must be 1 to {MAX_TOKENS} (the export's P), got {args.tokens}")
    if not 1 <= args.vectors <= MAX_VECTORS:
        raise AdapterError(f"--vectors must be 1 to {MAX_VECTORS}, got {args.vectors}")
    if args.count < 1 or args.eval_samples < 0:
        raise AdapterError(
            f"--count must be at least 1 and --eval-samples at least 0, got {args.count}, {args.eval_samples}"
        )


def run_train(args: argparse.Namespace) -> dict:
    defaults = DEFAULTS[args.kind]
    settings = Settings(
        steps=args.steps if args.steps is not None else defaults.steps,
        lr=args.lr if args.lr is not None else defaults.lr,
        batch=args.batch if args.batch is not None else defaults.batch,
        seed=args.seed,
        uncond_fraction=args.uncond_fraction,
        caption_dropout=args.caption_dropout,
    )
    settings.check()
    _check_sizes(args)
    if args.uncond_fraction and not args.preserve:
        raise AdapterError("--uncond-fraction needs --preserve: its rows are trained towards the frozen backbone")
    if args.preserve and (args.kind == "ti" or not args.concept):
        raise AdapterError(
            "--preserve needs --concept and a lora or vpt: it keeps the concept set's ordinary images as the "
            "backbone draws them (a textual inversion never changes prompts without its token)"
        )
    if args.lora_targets is not None and args.kind != "lora":
        raise AdapterError(f"--lora-targets is a lora option; a {args.kind} adapter has no LoRA targets")
    if args.train_text_encoder and args.kind != "lora":
        raise AdapterError(f"--train-text-encoder is a lora option; a {args.kind} adapter does not train one")
    lora_targets = args.lora_targets or "all"  # None only tells "not given" apart, for the check above
    if args.eval_samples and not args.concept:
        raise AdapterError("--eval-samples needs --concept: evaluation scores a concept of the shapes world")
    if args.out.suffix != ".safetensors":
        raise AdapterError(f"--out {args.out}: adapter files are .safetensors")
    if args.out.is_dir() or not args.out.parent.is_dir():
        raise AdapterError(f"--out {args.out}: the folder must exist and the path must not be a folder")
    token = ti_token(args) if args.kind == "ti" else None
    torch.set_num_threads(max(1, args.threads))
    pipe = load_frozen_pipeline(args.model)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    data = training_set(args, image_size(pipe), token)
    log.info("kind %s, %d images, settings %s", args.kind, len(data), settings)
    if args.kind == "ti":
        init_word = args.init_word or (concept(args.concept).init_word if args.concept else None)
        adapter, stats = train_ti(pipe, data, settings, token, args.vectors, init_word)
        save_ti(adapter, args.out)
    elif args.kind == "lora":
        stats = train_lora(pipe, data, settings, args.rank, args.preserve, lora_targets, args.train_text_encoder)
        save_lora(pipe, args.out)
    else:
        adapter, stats = train_vpt(pipe, data, settings, spec, args.tokens, args.depth, args.preserve)
        write_vpt(adapter, args.out)
    saved = load_adapter_file(args.out)  # the file must read back the way a server reads it
    validate(saved, spec, ExportLimits(MAX_RANK, MAX_TOKENS))
    report = {"kind": saved.kind, "out": str(args.out), "images": len(data), "settings": asdict(settings)}
    report |= {"preserve": args.preserve, "lora_targets": lora_targets if args.kind == "lora" else None}
    report |= {"train_text_encoder": args.train_text_encoder}
    report |= {"model": str(args.model), "backbone_fingerprint": spec.fingerprint, **stats}
    if args.eval_samples:
        report["eval"] = evaluate_adapter(saved, args.concept, args.model, samples=args.eval_samples)
    return report


def run_eval(args: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, args.threads))
    adapter = load_trained(args.file, args.kind)
    report = evaluate_adapter(
        adapter, args.concept, args.model, args.samples, args.steps, args.guidance, args.seed, args.batch
    )
    return report | {"file": str(args.file)}


def _logged(log_path: Path | None) -> logging.Handler | None:
    log.setLevel(logging.INFO)
    if log_path is None:
        return None
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def main(command: str, argv: list[str]) -> int:
    """Run `train` or `eval`; 0 on success, 2 on bad input (argparse exits 2 by itself)."""
    args = (train_parser() if command == "train" else eval_parser()).parse_args(argv)
    handler = _logged(Path(f"{args.out}.log") if command == "train" and args.out.parent.is_dir() else None)
    started = time.time()
    try:
        report = run_train(args) if command == "train" else run_eval(args)
    except (AdapterError, FileNotFoundError) as error:
        if handler is not None:
            log.error("error: %s", error)
        print(f"diffplex adapters {command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    report["wall_seconds"] = time.time() - started
    text = json.dumps(report, indent=2, default=str)
    if command == "eval" and args.json:
        args.json.write_text(text + "\n")
    if command == "train":
        with Path(f"{args.out}.log").open("a") as log_file:
            log_file.write(f"report {json.dumps(report, default=str)}\n")
    print(text)
    return 0
