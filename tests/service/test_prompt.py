from __future__ import annotations

import pytest

from service.prompt import PromptError, embeddings_used, extract_tags
from service.stores import AdapterMeta


def test_tags_are_removed_and_weighted() -> None:
    text, tags = extract_tags("a red circle <lora:style:0.8>, <LoRA:night> on blue <vpt:v:-0.5>")
    assert text == "a red circle , on blue"
    assert tags == [("style", 0.8), ("night", 1.0), ("v", -0.5)]


def test_prompts_without_tags_are_untouched() -> None:
    assert extract_tags("  a <star>  here ") == ("  a <star>  here ", [])


@pytest.mark.parametrize("prompt", ["<lora:x:heavy>", "<lora:x:nan>", "<lora:x:>"])
def test_bad_weights_are_refused_with_the_tag_quoted(prompt: str) -> None:
    with pytest.raises(PromptError, match="<lora:x"):
        extract_tags(prompt)


def test_embeddings_used_by_prompt_or_negative_prompt() -> None:
    metas = [
        AdapterMeta(name="s", kind="textual_inversion", size=1, sha256="0", tokens=["<star>"]),
        AdapterMeta(name="b", kind="textual_inversion", size=1, sha256="0", tokens=["<bad>"]),
        AdapterMeta(name="l", kind="lora", size=1, sha256="0"),
        AdapterMeta(name="u", kind="textual_inversion", size=1, sha256="0", tokens=["<unused>"]),
    ]
    used = embeddings_used(["a red <star>", "<bad> quality"], metas)
    assert [m.name for m in used] == ["s", "b"]
