from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from models.shapes.dataset import make_batch
from models.shapes.tokenizer import BOS, EOS, MAX_LENGTH, write_clip_tokenizer
from models.shapes.vocabulary import ATTRIBUTES

WORDS = sorted({word for values in ATTRIBUTES.values() for value in values for word in value.split()})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = make_batch(200, seed=0, include_held_out=True).captions + [" ".join(WORDS)]
    out = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(corpus, out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(tokenizer_dir)


def test_writes_clip_layout(tokenizer_dir: Path) -> None:
    assert (tokenizer_dir / "vocab.json").is_file()
    merges = (tokenizer_dir / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2"
    assert all(len(line.split(" ")) == 2 for line in merges[1:])
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    assert sorted(vocab.values()) == list(range(len(vocab)))  # dense ids, no gaps or repeats


@pytest.mark.parametrize("word", WORDS)
def test_vocabulary_words_are_single_tokens(tokenizer: CLIPTokenizer, word: str) -> None:
    assert tokenizer.tokenize(word) == [f"{word}</w>"]
    assert len(tokenizer(word).input_ids) == 3  # bos, word, eos


def test_special_tokens(tokenizer: CLIPTokenizer, tokenizer_dir: Path) -> None:
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    assert tokenizer.bos_token == BOS and tokenizer.bos_token_id == vocab[BOS]
    assert tokenizer.eos_token == EOS and tokenizer.eos_token_id == vocab[EOS]
    ids = tokenizer("a red star").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]


@pytest.mark.parametrize("text", ["zebra", "a mauve dodecahedron", "café 🦓", "RED Star!!"])
def test_any_text_tokenizes(tokenizer: CLIPTokenizer, text: str) -> None:
    ids = tokenizer(text).input_ids
    assert len(ids) > 2
    assert tokenizer.unk_token_id not in ids[1:-1]  # byte fallback: nothing maps to unknown


def test_pads_and_truncates_to_77(tokenizer: CLIPTokenizer) -> None:
    assert tokenizer.model_max_length == MAX_LENGTH == 77
    padded = tokenizer("a red star", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77
    assert padded[5:] == [tokenizer.pad_token_id] * 72  # bos, 3 words, eos, then padding
    long = tokenizer(" ".join(WORDS * 10), truncation=True, max_length=tokenizer.model_max_length).input_ids
    assert len(long) == 77 and long[-1] == tokenizer.eos_token_id


def test_classic_vocab_and_merges_alone_tokenize_the_same(
    tokenizer: CLIPTokenizer, tokenizer_dir: Path, tmp_path: Path
) -> None:
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    classic = CLIPTokenizer.from_pretrained(tmp_path)
    for text in ["a large striped star in the top left on a night background", "zebra café"]:
        assert classic(text).input_ids == tokenizer(text).input_ids, text
