from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from adapters.errors import AdapterError
from adapters.textual_inversion import (
    build_inputs_embeds,
    build_inputs_embeds_batch,
    check_tokens,
    split_prompt,
    ti_table,
)
from adapters.types import TextualInversion


def test_split_prompt_prefers_longest_token() -> None:
    assert split_prompt("a <cat> and <cat2>!", ["<cat>", "<cat2>"]) == ["a ", ("<cat>",), " and ", ("<cat2>",), "!"]
    assert split_prompt("plain", []) == ["plain"]


def test_plain_prompt_equals_token_lookup(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
    table = text_encoder.get_input_embeddings()
    ids = tokenizer("a red circle", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    got = build_inputs_embeds("a red circle", {}, tokenizer, table)
    assert got.shape == (77, 32)
    assert torch.equal(got, table(ids)[0])


def test_multi_vector_token_is_spliced_in_place(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
    table = text_encoder.get_input_embeddings()
    vectors = torch.randn(3, 32)
    got = build_inputs_embeds("a <cat> circle", {"<cat>": vectors}, tokenizer, table)
    plain = build_inputs_embeds("a circle", {}, tokenizer, table)
    n_a = len(tokenizer("a", add_special_tokens=False).input_ids)
    assert torch.equal(got[: 1 + n_a], plain[: 1 + n_a])  # BOS + "a"
    assert torch.equal(got[1 + n_a : 4 + n_a], vectors)
    assert torch.equal(got[4 + n_a :][:5], plain[1 + n_a :][:5])  # "circle", EOS, padding continue unchanged


def test_two_tenants_own_the_same_token(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
    table = text_encoder.get_input_embeddings()
    before, vocab = table.weight.clone(), len(tokenizer)
    mine, yours = {"<cat>": torch.ones(1, 32)}, {"<cat>": -torch.ones(1, 32)}
    batch = build_inputs_embeds_batch(["<cat>", "<cat>"], [mine, yours], tokenizer, table)
    assert torch.equal(batch[0, 1], torch.ones(32)) and torch.equal(batch[1, 1], -torch.ones(32))
    assert torch.equal(table.weight, before) and len(tokenizer) == vocab
    without = build_inputs_embeds("<cat>", {}, tokenizer, table)  # a third tenant has no <cat>: plain text
    assert not torch.equal(without[1], torch.ones(32))


def test_truncation_keeps_bos_and_eos_like_clip(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
    table = text_encoder.get_input_embeddings()
    long = " ".join(["red circle"] * 60)
    ids = tokenizer(long, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(build_inputs_embeds(long, {}, tokenizer, table), table(ids)[0])
    vectors = torch.randn(4, 32)
    cut = build_inputs_embeds("red " * 73 + "<x>", {"<x>": vectors}, tokenizer, table)
    assert torch.equal(cut[74:76], vectors[:2])  # 73 words + 2 of the 4 vectors fit before EOS
    assert torch.equal(cut[76], table.weight[tokenizer.eos_token_id])


def test_table_refuses_duplicates() -> None:
    a, b = TextualInversion({"<cat>": torch.ones(1, 4)}), TextualInversion({"<cat>": torch.zeros(1, 4)})
    assert set(ti_table([a, TextualInversion({"<dog>": torch.ones(1, 4)})])) == {"<cat>", "<dog>"}
    with pytest.raises(AdapterError, match="defined by two of your embeddings"):
        ti_table([a, b])


def test_tokens_match_whole_not_inside_words() -> None:
    assert split_prompt("asks sks sks's sks2 tasks", ["sks"]) == ["asks ", ("sks",), " ", ("sks",), "'s sks2 tasks"]
    # punctuation-bracketed tokens match anywhere, as diffusers' added tokens do
    assert split_prompt("x<c>y", ["<c>"]) == ["x", ("<c>",), "y"]
    assert split_prompt("a_b", ["a"]) == ["a_b"]  # `_` is a word character, as in CLIP's words


def test_a_token_inside_a_word_leaves_the_embeddings_alone(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel
) -> None:
    table = text_encoder.get_input_embeddings()
    plain = build_inputs_embeds("a banana", {}, tokenizer, table)
    assert torch.equal(build_inputs_embeds("a banana", {"ban": torch.ones(1, 32)}, tokenizer, table), plain)
    spliced = build_inputs_embeds("a ban", {"ban": torch.ones(1, 32)}, tokenizer, table)
    assert torch.equal(spliced[2], torch.ones(32))  # BOS, "a", then the token's vector


def test_tokens_the_tokenizer_already_has_are_refused(tokenizer: CLIPTokenizer) -> None:
    check_tokens(["<cat>", "mystyle", "<a>"], tokenizer)
    for word in ("a", "red", "Red", "<|endoftext|>"):
        with pytest.raises(AdapterError, match="already in the tokenizer's vocabulary.*Choose a token"):
            check_tokens([word], tokenizer)
    with pytest.raises(AdapterError, match="spaces"):
        check_tokens(["my style"], tokenizer)
    with pytest.raises(AdapterError, match="1 to 100 characters"):
        check_tokens(["<" + "x" * 100 + ">"], tokenizer)
