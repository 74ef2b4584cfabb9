"""CLIP's BPE tokenizer files (`vocab.json`, `merges.txt`) built offline from OpenAI's merge list, shipped once as
`single_file_configs/clip/bpe_simple_vocab_16e6.txt.gz` (its origin and licence: the README beside it).

SD-1.x (CLIP ViT-L/14) and SD-2.x (OpenCLIP ViT-H/14) use the same 49,408-token vocabulary; the published
diffusers repositories hold it as vocab.json + merges.txt, 1.5 MB that would otherwise be committed three times.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from export.errors import ExportError

MERGES_FILE = Path(__file__).parent / "single_file_configs" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps 49,152 - 256 - 2 merges: a vocabulary of 2 x 256 byte symbols, the merges and 2 special tokens.
MERGE_COUNT = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + MERGE_COUNT + 2
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table: printable Latin-1 bytes stand for themselves, the rest
    (control characters, space) are shifted past 255 so that the BPE never sees whitespace."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table  # insertion order is the vocabulary's: printable bytes first, then the shifted ones


@cache
def clip_merges() -> tuple[tuple[str, str], ...]:
    """The first MERGE_COUNT merges of the shipped list (its line 0 is a version header)."""
    try:
        lines = gzip.decompress(MERGES_FILE.read_bytes()).decode("utf-8").split("\n")
    except OSError as e:
        raise ExportError(f"cannot read CLIP's merge list {MERGES_FILE}: {e} (a broken install?)") from e
    merges = tuple(tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1])
    if len(merges) != MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise ExportError(f"{MERGES_FILE} is not CLIP's merge list: expected {MERGE_COUNT} pairs")
    return merges  # type: ignore[return-value]


def clip_vocab() -> dict[str, int]:
    """token -> id exactly as CLIP numbers them: the byte symbols (in CLIP's order), the same with the
    end-of-word mark `</w>`, one token per merge in merge order, then BOS (49,406) and EOS (49,407)."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in clip_merges()), BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ExportError(f"CLIP's vocabulary built {len(vocab)} distinct tokens, not {VOCAB_SIZE}")
    return vocab


def write_clip_tokenizer_files(tokenizer_dir: Path) -> None:
    """vocab.json and merges.txt as the published SD repositories hold them (transformers' CLIPTokenizer reads
    them; the tokenizer_config.json beside them says the rest: pad token, max length)."""
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(clip_vocab(), ensure_ascii=False), encoding="utf-8")
    merges = "\n".join(" ".join(m) for m in clip_merges())
    (tokenizer_dir / "merges.txt").write_text(f"#version: 0.2\n{merges}\n", encoding="utf-8")
