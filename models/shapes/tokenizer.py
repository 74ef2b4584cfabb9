"""Build a CLIP tokenizer (vocab.json + merges.txt) from the caption corpus, with no download.

The files follow CLIP's own layout: the 256 byte symbols, the same with the end-of-word mark `</w>`,
one entry per BPE merge in merge order, then the two special tokens. `transformers.CLIPTokenizer`
reads them as it reads OpenAI's, so any text tokenizes (unknown words fall back to smaller pieces).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
# Beside the tokenizer's files: the words the backbone was trained on, a JSON list. The service warns about
# prompt words outside it (service/generation/warnings.py); a model without the file has an open vocabulary.
TRAINED_WORDS_FILE = "trained_words.json"


def write_trained_words(tokenizer_dir: Path, words: list[str]) -> None:
    (Path(tokenizer_dir) / TRAINED_WORDS_FILE).write_text(json.dumps(sorted(words)) + "\n")


def learn_merges(corpus: list[str], max_merges: int = 2000) -> list[tuple[str, str]]:
    """BPE merges learned on `corpus` with CLIP's word-final `</w>` convention (deterministic)."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=512 + max_merges, min_frequency=1, end_of_word_suffix="</w>", show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]  # type: ignore[misc]


def write_clip_tokenizer(corpus: list[str], out_dir: Path) -> CLIPTokenizer:
    """Build the tokenizer and save it to `out_dir` (vocab.json, merges.txt, tokenizer.json, config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(corpus)
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(out_dir)
    # Also CLIP's classic pair, for readers (older transformers, other runtimes) without tokenizer.json.
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return tokenizer
