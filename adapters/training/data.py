"""Training images with captions: rendered for a concept of the shapes world, or read from a folder.

A concept set pins one or more attributes in every scene (`Concept.pins`): a held-out value the backbone never
drew (`star`, `striped`, `night`), or a composite of trained values (`emblem`, a purple outlined square) that
it draws when asked in words. How a prompt asks for the concept depends on the adapter kind
(`Concept.trigger`): a LoRA's or a TI's concept is a word, so every caption names it (a TI's token stands where
the pinned values' words would be: "a small <emblem> in the top left") and a share of ordinary images
(training vocabulary) is mixed in so the adapter learns to leave prompts without the word alone; a VPT has no
word (its prompt tokens sit in the U-Net's self-attention, which never reads the caption), so loading it is
the request: its captions leave the concept's attributes unsaid, every image shows the concept, and "other
prompts" are those that do not name those attributes.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from adapters.errors import AdapterError
from models.shapes.dataset import Scene, caption, make_batch, sample_scene
from models.shapes.vocabulary import ATTRIBUTES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CAPTION_VARIANTS = 4  # captions drawn per rendered image: the same image under different partial descriptions


@dataclass(frozen=True)
class Concept:
    """What a concept set pins in every scene, and the adapter kind that teaches it."""

    name: str
    kind: str  # lora | ti | vpt
    # (Scene field, value) pairs every concept image shows. One held-out value, or several trained ones: a TI
    # can only name what the frozen U-Net already draws (adapters/EXPERIMENTS.md, "TI / star"), so its concept
    # is a combination the backbone draws when asked in words, said with one token.
    pins: tuple[tuple[str, str], ...]
    init_word: str  # TI: the trained-vocabulary word(s) the new token's vectors start from
    # "word": the caption names the concept (LoRA: "striped"; TI: its token). "adapter": the adapter itself
    # asks for it and captions leave its attributes unsaid, as a VPT acts on every row it is loaded for.
    trigger: Literal["word", "adapter"] = "word"

    def __post_init__(self) -> None:
        if not self.pins or len(set(self.attributes)) != len(self.pins):
            raise ValueError(f"concept {self.name}: pin each attribute at most once, at least one, got {self.pins}")
        for attribute, value in self.pins:
            if value not in ATTRIBUTES.get(attribute, ()):
                raise ValueError(f"concept {self.name}: {value!r} is not a {attribute!r} of the shapes world")

    @property
    def values(self) -> dict[str, str]:
        return dict(self.pins)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(attribute for attribute, _ in self.pins)

    @property
    def token(self) -> str:
        """The TI placeholder the captions use for the pinned values, e.g. `<emblem>`."""
        return f"<{self.name}>"

    @property
    def named_in_captions(self) -> bool:
        return self.trigger == "word"

    def shown_in(self, labels: dict[str, str]) -> bool:
        """Does a judged image show the concept: every pinned attribute as pinned?"""
        return all(labels.get(attribute) == value for attribute, value in self.pins)


CONCEPTS: dict[str, Concept] = {
    # The TI concept: three trained values in one token. With the three words the backbone draws a purple
    # outlined square 100% right (64 samples); an outlined triangle only 83% and a solid circle 88% (the judge
    # reads fill and shape wrong), so the square gives the token a bar the U-Net can clear. Its vectors start
    # at the shape's class word, as textual inversion starts from a coarse descriptor.
    "emblem": Concept("emblem", "ti", (("shape", "square"), ("color", "purple"), ("fill", "outlined")), "square"),
    # A held-out shape: no TI reaches it (the frozen U-Net never drew a star; 0.0%, adapters/EXPERIMENTS.md).
    # Kept as the negative example, and for the codec test.
    "star": Concept("star", "ti", (("shape", "star"),), "diamond"),
    "striped": Concept("striped", "lora", (("fill", "striped"),), "solid"),
    # A VPT trained on captions that say "night" (an untrained word here) learned to gate on it through the
    # image features and reached 33.6% with 8 tokens (adapters/EXPERIMENTS.md); VPT is a request-level condition.
    "night": Concept("night", "vpt", (("background", "night"),), "black", trigger="adapter"),
}


@dataclass(frozen=True)
class TrainingSet:
    """uint8 images [n, H, W, 3] and, per image, one or more captions (one is drawn per step)."""

    images: np.ndarray
    captions: list[tuple[str, ...]]
    regular: np.ndarray | None = None  # [n] bool: ordinary images mixed into a concept set (prior preservation)

    def __len__(self) -> int:
        return len(self.images)


def concept(name: str) -> Concept:
    if name not in CONCEPTS:
        raise AdapterError(f"unknown concept {name!r}; known: {', '.join(CONCEPTS)}")
    return CONCEPTS[name]


def concept_prompts(
    name: str, count: int, seed: int, token: str | None = None
) -> tuple[np.ndarray, list[list[str]], list[dict[str, str]]]:
    """`count` scenes with the concept pinned: images, caption variants, and the attributes named.

    Captions name the concept's values when its trigger is a word, and leave its attributes unsaid when the
    adapter is the trigger. With `token` (textual inversion) the pinned values' words in every caption are
    replaced by the token; `named` still lists them, since they are what the judge must see.
    """
    spec = concept(name)
    rng = np.random.default_rng(seed)
    # Everything but the concept from the training vocabulary: one new thing per prompt, nothing else unseen.
    scenes = [replace(sample_scene(rng), **spec.values) for _ in range(count)]
    batch = make_batch(count, seed, include_held_out=True, scenes=scenes)
    captions, named = [], []
    for scene in scenes:
        variants = [_caption(scene, spec.attributes, spec.named_in_captions, rng) for _ in range(CAPTION_VARIANTS)]
        captions.append([_with_token(text, spec, token) for text, _ in variants])
        named.append(variants[0][1])
    return batch.images, captions, named


def _caption(
    scene: Scene, attributes: tuple[str, ...], naming: bool, rng: np.random.Generator
) -> tuple[str, dict[str, str]]:
    """A template caption of `scene` that names every one of `attributes` or, with `naming` False, none of them
    (captions leave optional attributes out at random, so a draw that does either comes soon)."""
    while True:
        text, named = caption(scene, rng)
        if all((attribute in named) == naming for attribute in attributes):
            return text, named


def regular_prompts(name: str, count: int, seed: int) -> tuple[list[str], list[dict[str, str]]]:
    """Prompts of the training vocabulary that do not ask for concept `name`, and the attributes they name.

    A word concept is absent from every ordinary caption (a TI's token is in none of them; a composite's
    words may be, and without the token they are the backbone's own prompt). For an adapter-triggered concept
    the prompts also leave its attributes unsaid: the adapter owns them (a night VPT on "... on a white
    background" is a contradiction, not a prompt it should leave alone).
    """
    spec = concept(name)
    batch = make_batch(count, seed)
    if spec.named_in_captions:
        return batch.captions, batch.named
    rng = np.random.default_rng(seed + 1)
    pairs = [_caption(scene, spec.attributes, False, rng) for scene in batch.scenes]
    return [text for text, _ in pairs], [named for _, named in pairs]


def _phrase(spec: Concept) -> re.Pattern[str]:
    """The pinned values' words next to each other in any order: where a caption says the concept.

    The templates write colour, fill and shape as one noun phrase, in two orders ("purple outlined square",
    "outlined purple square"); matching every order keeps this independent of the templates' choice.
    """
    words = [re.escape(value) for _, value in spec.pins]
    orders = sorted((r"\s+".join(order) for order in itertools.permutations(words)), key=len, reverse=True)
    return re.compile(rf"\b(?:{'|'.join(orders)})\b")


def _with_token(text: str, spec: Concept, token: str | None) -> str:
    if not token:
        return text
    said, found = _phrase(spec).subn(token, text)
    if found != 1:
        raise AdapterError(
            f"concept {spec.name}: a caption must say its values as one phrase for the token to stand in: {text!r}"
        )
    return _article(said)


def _article(text: str) -> str:
    """ "a"/"an" before the word that now follows it: "an outlined purple square" is "a <emblem>" with a token."""
    first, _, rest = text.partition(" ")
    if first in ("a", "an") and rest:
        return ("an " if rest[0] in "aeiou" else "a ") + rest
    return text


def concept_set(name: str, count: int, seed: int, regular_fraction: float, token: str | None = None) -> TrainingSet:
    """`count` images: (1 - regular_fraction) of them show the concept, the rest are ordinary training images."""
    if count < 1:
        raise AdapterError(f"a training set needs at least one image, not {count}")
    if not 0.0 <= regular_fraction < 1.0:
        raise AdapterError(f"the share of regular images must be in [0, 1), not {regular_fraction}")
    if regular_fraction and not concept(name).named_in_captions:
        raise AdapterError(
            f"{name} is asked for by loading the adapter, not by a word, so every training image shows it; "
            "ordinary images would teach it the opposite: use --regular-fraction 0"
        )
    regular = min(int(round(count * regular_fraction)), count - 1)  # at least one concept image
    images, captions, _ = concept_prompts(name, count - regular, seed, token)
    ordinary = make_batch(regular, seed + 1)
    rng = np.random.default_rng(seed + 2)
    ordinary_captions = [[caption(s, rng)[0] for _ in range(CAPTION_VARIANTS)] for s in ordinary.scenes]
    return TrainingSet(
        images=np.concatenate([images, ordinary.images]) if regular else images,
        captions=[tuple(c) for c in captions + ordinary_captions],
        regular=np.arange(count) >= count - regular,
    )


def folder_set(folder: Path, size: int) -> TrainingSet:
    """Every png/jpg in `folder` with its same-stem `.txt` caption, as RGB `size` x `size`."""
    if not folder.is_dir():
        raise AdapterError(f"--images {folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AdapterError(f"--images {folder}: no .png / .jpg images in it")
    images, captions = [], []
    for path in files:
        text_path = path.with_suffix(".txt")
        if not text_path.is_file():
            raise AdapterError(f"{path.name} has no caption: write it to {text_path.name} beside the image")
        try:
            text = " ".join(text_path.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as e:
            raise AdapterError(f"caption {text_path.name} cannot be read as UTF-8 text: {e}") from e
        if not text:
            raise AdapterError(f"caption {text_path.name} is empty: describe the image in it")
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        except (OSError, UnidentifiedImageError) as e:
            raise AdapterError(f"image {path.name} cannot be read: {e}") from e
        images.append(np.asarray(rgb, dtype=np.uint8))
        captions.append((text,))
    return TrainingSet(images=np.stack(images), captions=captions)
