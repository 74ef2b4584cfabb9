from __future__ import annotations

import pytest

from service.generation.params import MAX_ADAPTER_WEIGHT
from service.generation.prompt import PromptError, embeddings_used, extract_tags
from service.stores import AdapterMeta


def test_tags_are_removed_and_weighted() -> None:
    text, tags = extract_tags("a red circle <lora:style:0.8>, <LoRA:night> on blue <vpt:v:-0.5> <lyco:l>")
    assert text == "a red circle , on blue"
    assert tags == [("style", 0.8, "lora"), ("night", 1.0, "lora"), ("v", -0.5, "vpt"), ("l", 1.0, "lora")]


def test_prompts_without_tags_are_untouched() -> None:
    assert extract_tags("  a <star>  here ") == ("  a <star>  here ", [])


@pytest.mark.parametrize("prompt", ["<lora:x:heavy>", "<lora:x:nan>", "<lora:x:>"])
def test_bad_weights_are_refused_with_the_tag_quoted(prompt: str) -> None:
    with pytest.raises(PromptError, match="<lora:x"):
        extract_tags(prompt)


@pytest.mark.parametrize("weight", ["1e308", "10.5", "-11", "inf"])
def test_tag_weights_have_the_range_of_adapter_weights(weight: str) -> None:
    with pytest.raises(PromptError, match=f"<lora:x:{weight}>.*from -10 to 10"):
        extract_tags(f"a <lora:x:{weight}>")
    tags = extract_tags("a <lora:x:10> <lora:y:-10>")[1]
    assert [(t.name, t.weight) for t in tags] == [("x", MAX_ADAPTER_WEIGHT), ("y", -MAX_ADAPTER_WEIGHT)]


def test_embeddings_used_by_prompt_or_negative_prompt() -> None:
    metas = [
        AdapterMeta(name="s", kind="textual_inversion", size=1, sha256="0", tokens=["<star>"]),
        AdapterMeta(name="b", kind="textual_inversion", size=1, sha256="0", tokens=["<bad>"]),
        AdapterMeta(name="l", kind="lora", size=1, sha256="0"),
        AdapterMeta(name="u", kind="textual_inversion", size=1, sha256="0", tokens=["<unused>"]),
    ]
    used = embeddings_used(["a red <star>", "<bad> quality"], metas)
    assert [m.name for m in used] == ["s", "b"]


def test_embeddings_are_used_where_their_token_stands_whole() -> None:
    metas = [
        AdapterMeta(name="sks", kind="textual_inversion", size=1, sha256="0", tokens=["sks"]),
        AdapterMeta(name="star", kind="textual_inversion", size=1, sha256="0", tokens=["<star>"]),
    ]
    assert embeddings_used(["she asks for tasks"], metas) == []  # "sks" inside words: not the token
    assert [m.name for m in embeddings_used(["a sks, on blue"], metas)] == ["sks"]
    assert [m.name for m in embeddings_used(["two<star>s"], metas)] == ["star"]  # bracketed: anywhere
    assert embeddings_used(["", "no tokens"], metas) == []
