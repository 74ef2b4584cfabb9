"""Score a trained adapter with the judge: does it teach its concept, and does it leave other prompts alone?

Images are generated through the serving path's PyTorch reference: prompts are laid out by
`build_inputs_embeds` (textual inversion spliced on the host) and encoded by `encode_inputs_embeds`; the
U-Net and text encoder carry banked modules (`install_banked`) fed by `pack_banks`, so a LoRA or VPT file
runs exactly as a server would run it; diffusers' `StableDiffusionPipeline.__call__` does the sampling
(DDIM, classifier-free guidance over uncond + cond rows, all in the adapter's slot).

(a) concept accuracy: among prompts asking for the concept, the share where the judge sees every attribute the
concept pins (target 0.8), with each pinned attribute's accuracy and that of the other attributes the prompts
name (size, position, background: a token must not cost them);
(b) prompt accuracy on training-vocabulary prompts with the adapter loaded minus without (target +-0.02; 0 for a
TI, which never touches a prompt without its token), on the same prompts and seeds, so the difference is the
adapter's doing, and the share of those images that came out byte-identical.
A prompt asks for a LoRA's or TI's concept by naming it; a VPT's concept is asked for by loading the VPT,
so its prompts, concept and regular, leave the concept's attributes unsaid (`adapters.training.data`).
Two references to read (a) against: the codec ceiling, the judge's concept accuracy on the concept's rendered
images after a round trip through the backbone's VAE (adapters are trained towards those latents, so it bounds
(a) for every kind); and the words, the backbone without the adapter on the same prompts with the pinned
values' words where a TI's token stands (for a composite of trained values, what the token replaces).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from tqdm import tqdm

from adapters.errors import AdapterError
from adapters.formats import load_adapter_file
from adapters.install import BankedModel, install_banked
from adapters.packing import PackedBanks, pack_banks
from adapters.spec import BackboneSpec, build_spec
from adapters.text_encoder import encode_inputs_embeds
from adapters.textual_inversion import build_inputs_embeds_batch, ti_table
from adapters.training.data import Concept, concept, concept_prompts, regular_prompts
from adapters.training.loop import vae_round_trip
from adapters.training.options import KIND_NAMES, MAX_RANK, MAX_TOKENS
from adapters.types import Adapter, LoRAAdapter, TextualInversion, VPTAdapter
from adapters.validate import ExportLimits, validate
from models.shapes.evaluate import load_pipeline
from models.shapes.judge import ShapesJudge
from models.shapes.metrics import attribute_accuracy, prompt_accuracy

CONCEPT_TARGET = 0.80
REGULAR_TOLERANCE = 0.02
# A TI is spliced only where its token is: any change to a prompt without it would be a bug, not drift.
TI_REGULAR_TOLERANCE = 0.0


@dataclass
class ReferencePipeline:
    """A diffusers pipeline whose U-Net and text encoder run with slot banks (`adapters.install`)."""

    pipe: StableDiffusionPipeline
    spec: BackboneSpec
    unet: BankedModel
    text_encoder: BankedModel

    @classmethod
    def load(cls, model_dir: Path) -> ReferencePipeline:
        if not (Path(model_dir) / "model_index.json").is_file():
            raise AdapterError(f"--model {model_dir}: not a diffusers pipeline directory (no model_index.json)")
        pipe = load_pipeline(Path(model_dir))
        spec = build_spec(pipe.unet, pipe.text_encoder)  # before installing: fingerprints the plain backbone
        unet = install_banked(pipe.unet, spec, "unet")
        text_encoder = install_banked(pipe.text_encoder, spec, "text_encoder")
        return cls(pipe, spec, unet, text_encoder)

    def pack(self, adapter: Adapter | None) -> tuple[PackedBanks, int]:
        """Banks holding `adapter` (or nothing) and the slot its rows use."""
        rank = 1
        if isinstance(adapter, LoRAAdapter):
            rank = max((layer.rank for layer in adapter.layers.values()), default=1)
        tokens = adapter.num_tokens if isinstance(adapter, VPTAdapter) else 1
        packed = pack_banks([[(adapter, 1.0)] if adapter else None], self.spec, rank, tokens)
        return packed, int(packed.adapter_slot[0])

    @torch.no_grad()
    def encode(
        self, prompts: list[str], table: dict[str, torch.Tensor], packed: PackedBanks, slot: int
    ) -> torch.Tensor:
        tokenizer, text_encoder = self.pipe.tokenizer, self.pipe.text_encoder
        embeds = build_inputs_embeds_batch(
            prompts, [table] * len(prompts), tokenizer, text_encoder.get_input_embeddings()
        )
        with self.text_encoder.activate(packed.text_encoder, torch.full((len(prompts),), slot)):
            return encode_inputs_embeds(text_encoder, embeds)

    def generate(
        self, adapter: Adapter | None, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch: int
    ) -> np.ndarray:
        """uint8 [n, H, W, 3]; image i from its own generator seeded with seeds[i]."""
        packed, slot = self.pack(adapter)
        table = ti_table([adapter]) if isinstance(adapter, TextualInversion) else {}
        out = []
        for start in tqdm(range(0, len(prompts), batch), desc="generate", unit="batch"):
            chunk = prompts[start : start + batch]
            cond = self.encode(chunk, table, packed, slot)
            uncond = self.encode([""] * len(chunk), {}, packed, slot)
            # With guidance the pipeline runs uncond + cond rows together; at guidance <= 1 only the cond rows.
            rows = torch.full(((2 if guidance > 1 else 1) * len(chunk),), slot)
            with self.unet.activate(packed.unet, rows):
                images = self.pipe(
                    prompt_embeds=cond,
                    negative_prompt_embeds=uncond,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=[torch.Generator().manual_seed(s) for s in seeds[start : start + batch]],
                    output_type="np",
                ).images
            out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
        return np.concatenate(out)


def load_trained(path: Path, kind: str) -> Adapter:
    """The adapter file, parsed as a server would parse it, and checked to be the `kind` asked for."""
    if not Path(path).is_file():
        raise AdapterError(f"--file {path}: no such file")
    adapter = load_adapter_file(path)
    if adapter.kind != KIND_NAMES[kind]:
        raise AdapterError(f"--file {path} holds a {adapter.kind} adapter, not {KIND_NAMES[kind]} (--kind {kind})")
    return adapter


def pinned_accuracy(target: Concept, labels: list[dict[str, str]]) -> dict[str, float]:
    """Per attribute the concept pins, the share of images where the judge sees its value. From the pins, not
    the prompts: a VPT's prompts never name what it pins."""
    return {a: float(np.mean([label[a] == v for label in labels])) for a, v in target.pins}


def evaluate_adapter(
    adapter: Adapter,
    concept_name: str,
    model_dir: Path,
    samples: int = 128,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 1000,
    batch: int = 32,
) -> dict:
    """The report: concept accuracy, and regular prompt accuracy with vs without the adapter."""
    if samples < 1 or steps < 1 or batch < 1:
        raise AdapterError("--samples, --steps and --batch must be at least 1")
    started = time.time()
    target = concept(concept_name)
    token = None
    if isinstance(adapter, TextualInversion):
        if len(adapter.tokens) != 1:
            raise AdapterError(f"the embedding holds {len(adapter.tokens)} tokens; evaluation needs exactly one")
        token = next(iter(adapter.tokens))
    reference = ReferencePipeline.load(model_dir)
    validate(adapter, reference.spec, ExportLimits(MAX_RANK, MAX_TOKENS))  # e.g. a VPT of another backbone
    judge = ShapesJudge.load()
    seeds = [seed * 1_000_000 + i for i in range(samples)]
    concept_images, concept_captions, concept_named = concept_prompts(concept_name, samples, seed, token)
    # The same scenes rendered, then passed through the backbone's VAE: the concept accuracy no adapter can beat.
    ceiling_labels = judge(vae_round_trip(reference.pipe.vae, concept_images)).labels
    codec_ceiling = float(np.mean([target.shown_in(label) for label in ceiling_labels]))
    concept_texts = [variants[0] for variants in concept_captions]
    labels = judge(reference.generate(adapter, concept_texts, seeds, steps, guidance, batch)).labels
    concept_accuracy = float(np.mean([target.shown_in(label) for label in labels]))
    # The same prompts and seeds with the words (no token, no adapter): what the backbone draws when asked
    # in words; for a VPT's prompts, which never name the concept, how often the backbone draws it anyway.
    _, word_captions, _ = concept_prompts(concept_name, samples, seed)
    word_labels = judge(reference.generate(None, [v[0] for v in word_captions], seeds, steps, guidance, batch)).labels
    regular, regular_named = regular_prompts(concept_name, samples, seed=seed + 1)  # never ask for the concept
    with_images = reference.generate(adapter, regular, seeds, steps, guidance, batch)
    without_images = reference.generate(None, regular, seeds, steps, guidance, batch)
    with_adapter, without = judge(with_images).labels, judge(without_images).labels
    accuracy_with = prompt_accuracy(regular_named, with_adapter)
    accuracy_without = prompt_accuracy(regular_named, without)
    delta = accuracy_with - accuracy_without
    tolerance = TI_REGULAR_TOLERANCE if token else REGULAR_TOLERANCE
    concept_attributes = attribute_accuracy(concept_named, labels)
    return {
        "kind": adapter.kind,
        "concept": concept_name,
        "concept_pins": target.values,
        "token": token,
        "model": str(model_dir),
        "samples": samples,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        # Every pinned attribute right at once: the figure the bar is on.
        "concept_accuracy": concept_accuracy,
        "concept_accuracy_codec_ceiling": codec_ceiling,
        "concept_accuracy_words_without_adapter": float(np.mean([target.shown_in(label) for label in word_labels])),
        "concept_prompt_accuracy": prompt_accuracy(concept_named, labels),
        "concept_attribute_accuracy": concept_attributes,
        "concept_pinned_attribute_accuracy": pinned_accuracy(target, labels),
        "concept_pinned_attribute_accuracy_words_without_adapter": pinned_accuracy(target, word_labels),
        # Size, position, background as the prompts name them: what else the token or adapter disturbs.
        "concept_other_attribute_accuracy": {a: v for a, v in concept_attributes.items() if a not in target.attributes},
        "concept_other_attribute_accuracy_words_without_adapter": {
            a: v for a, v in attribute_accuracy(concept_named, word_labels).items() if a not in target.attributes
        },
        "regular_prompt_accuracy_with_adapter": accuracy_with,
        "regular_prompt_accuracy_without_adapter": accuracy_without,
        "regular_prompt_accuracy_delta": delta,
        # Share of regular images identical to the last byte with and without the adapter (1.0 for a TI).
        "regular_images_unchanged": float(np.mean((with_images == without_images).all(axis=(1, 2, 3)))),
        # Which attributes an adapter disturbs on prompts that do not use it (where the delta comes from).
        "regular_attribute_accuracy_with_adapter": attribute_accuracy(regular_named, with_adapter),
        "regular_attribute_accuracy_without_adapter": attribute_accuracy(regular_named, without),
        "targets": {"concept_accuracy": CONCEPT_TARGET, "regular_delta": tolerance},
        "passed": {
            "concept_accuracy": concept_accuracy >= CONCEPT_TARGET,
            "regular_delta": abs(delta) <= tolerance,
        },
        "example_prompts": concept_texts[:4],
        "seconds": time.time() - started,
    }
