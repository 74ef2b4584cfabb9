"""What `diffplex adapters train` and `eval` do once their arguments parsed (`adapters/training/cli.py`): check
the sizes, build the training set, train, save, read the file back as a server would, and evaluate."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import torch

from adapters.errors import AdapterError
from adapters.formats import load_adapter_file, write_vpt
from adapters.spec import build_spec
from adapters.training.data import TrainingSet, concept, concept_set, folder_set
from adapters.training.evaluate import evaluate_adapter, load_trained
from adapters.training.loop import Settings, image_size, load_frozen_pipeline, log
from adapters.training.lora import save_lora, train_lora
from adapters.training.options import DEFAULTS, MAX_RANK, MAX_TOKENS, MAX_VECTORS
from adapters.training.ti import save_ti, train_ti
from adapters.training.vpt import train_vpt
from adapters.validate import ExportLimits, validate


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
