"""Score a trained adapter with the judge: does it teach its concept, and does it leave other prompts alone?

Images are generated through the serving path's PyTorch reference: prompts are laid out by
`build_inputs_embeds` (textual inversion spliced on the host) and encoded by `encode_inputs_embeds`; the
U-Net and text encoder carry banked modules (`install_banked`) fed by `pack_banks`, so a LoRA or VPT file
runs exactly as a server would run it; diffusers' `StableDiffusionPipeline.__call__` does the sampling
(DDIM, classifier-free guidance over uncond + cond rows, all in the adapter's slot).

(a) concept accuracy: among prompts asking for the concept, the share where the judge sees it (target 0.8);
(b) prompt accuracy on training-vocabulary prompts with the adapter loaded minus without (target +-0.02),
on the same prompts and seeds, so the difference is the adapter's doing.
A prompt asks for a LoRA's or TI's concept by naming it; a VPT's concept is asked for by loading the VPT,
so its prompts, concept and regular, leave the concept's attribute unsaid (`adapters.training.data`).
The report also gives the codec ceiling: the judge's concept accuracy on the concept's rendered images after a
round trip through the backbone's VAE. Adapters are trained towards those latents, so it bounds (a) for every kind.
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
from adapters.training.data import concept, concept_prompts, regular_prompts
from adapters.training.loop import vae_round_trip
from adapters.training.lora import MAX_RANK
from adapters.training.vpt import MAX_TOKENS
from adapters.types import Adapter, LoRAAdapter, TextualInversion, VPTAdapter
from adapters.validate import ExportLimits, validate
from models.shapes.evaluate import load_pipeline
from models.shapes.judge import ShapesJudge
from models.shapes.metrics import attribute_accuracy, prompt_accuracy

CONCEPT_TARGET = 0.80
REGULAR_TOLERANCE = 0.02
KIND_NAMES = {"lora": "lora", "ti": "textual_inversion", "vpt": "vpt"}


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
    codec_ceiling = float(np.mean([label[target.attribute] == target.name for label in ceiling_labels]))
    concept_texts = [variants[0] for variants in concept_captions]
    labels = judge(reference.generate(adapter, concept_texts, seeds, steps, guidance, batch)).labels
    hits = [label[target.attribute] == target.name for label in labels]
    regular, regular_named = regular_prompts(concept_name, samples, seed=seed + 1)  # never ask for the concept
    with_adapter = judge(reference.generate(adapter, regular, seeds, steps, guidance, batch)).labels
    without = judge(reference.generate(None, regular, seeds, steps, guidance, batch)).labels
    accuracy_with = prompt_accuracy(regular_named, with_adapter)
    accuracy_without = prompt_accuracy(regular_named, without)
    concept_accuracy = float(np.mean(hits))
    delta = accuracy_with - accuracy_without
    return {
        "kind": adapter.kind,
        "concept": concept_name,
        "model": str(model_dir),
        "samples": samples,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "concept_accuracy": concept_accuracy,
        "concept_accuracy_codec_ceiling": codec_ceiling,
        "concept_prompt_accuracy": prompt_accuracy(concept_named, labels),
        "concept_attribute_accuracy": attribute_accuracy(concept_named, labels),
        "regular_prompt_accuracy_with_adapter": accuracy_with,
        "regular_prompt_accuracy_without_adapter": accuracy_without,
        "regular_prompt_accuracy_delta": delta,
        # Which attributes an adapter disturbs on prompts that do not use it (where the delta comes from).
        "regular_attribute_accuracy_with_adapter": attribute_accuracy(regular_named, with_adapter),
        "regular_attribute_accuracy_without_adapter": attribute_accuracy(regular_named, without),
        "targets": {"concept_accuracy": CONCEPT_TARGET, "regular_delta": REGULAR_TOLERANCE},
        "passed": {
            "concept_accuracy": concept_accuracy >= CONCEPT_TARGET,
            "regular_delta": abs(delta) <= REGULAR_TOLERANCE,
        },
        "example_prompts": concept_texts[:4],
        "seconds": time.time() - started,
    }
