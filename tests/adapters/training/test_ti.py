"""Textual-inversion training moves only its own vectors: the tokenizer and embedding table stay as they were."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.textual_inversion import build_inputs_embeds
from adapters.training.data import concept_set
from adapters.training.loop import Settings, load_frozen_pipeline
from adapters.training.ti import initial_vectors, spliced_text, train_ti


def test_training_changes_the_vectors_not_the_table(pipeline_dir: Path) -> None:
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    vocabulary = len(pipe.tokenizer)
    data = concept_set("star", 8, seed=0, regular_fraction=0.0, token="<star>")
    start = initial_vectors(pipe, "diamond", 2)
    adapter, _ = train_ti(pipe, data, Settings(steps=3, lr=1e-2, batch=2), "<star>", 2, "diamond")
    vectors = adapter.tokens["<star>"]
    assert vectors.shape == start.shape
    assert not torch.allclose(vectors, start)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, table)
    assert len(pipe.tokenizer) == vocabulary


def test_spliced_text_matches_the_serving_layout(pipeline_dir: Path) -> None:
    """The differentiable splice gives what `build_inputs_embeds` gives for the same vectors."""
    pipe = load_frozen_pipeline(pipeline_dir)
    vectors = torch.randn(2, pipe.text_encoder.config.hidden_size)
    prompt = "a red <star> and a <star> on a white background"
    from adapters.text_encoder import encode_inputs_embeds

    served = build_inputs_embeds(prompt, {"<star>": vectors}, pipe.tokenizer, pipe.text_encoder.get_input_embeddings())
    with torch.no_grad():
        expected = encode_inputs_embeds(pipe.text_encoder, served[None])
        got = spliced_text(pipe, "<star>", vectors)([prompt])
    torch.testing.assert_close(got, expected)


def test_a_phrase_of_as_many_tokens_as_vectors_starts_one_vector_per_token(pipeline_dir: Path) -> None:
    """ "purple outlined square" over 3 vectors starts the token where its words are; any other count, at their mean."""
    pipe = load_frozen_pipeline(pipeline_dir)
    table = pipe.text_encoder.get_input_embeddings().weight
    phrase = "purple outlined square"
    ids = pipe.tokenizer(phrase, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(initial_vectors(pipe, phrase, len(ids)), table[ids])
    mean = initial_vectors(pipe, phrase, len(ids) + 1)
    torch.testing.assert_close(mean, table[ids].mean(0).repeat(len(ids) + 1, 1))


def test_ti_trains_on_the_composite_concept(pipeline_dir: Path) -> None:
    """The emblem set's captions carry the token where the three words would be, so it trains as any TI."""
    torch.set_num_threads(1)
    pipe = load_frozen_pipeline(pipeline_dir)
    data = concept_set("emblem", 4, seed=0, regular_fraction=0.0, token="<emblem>")
    adapter, _ = train_ti(pipe, data, Settings(steps=2, lr=1e-2, batch=2), "<emblem>", 1, "square")
    assert adapter.tokens["<emblem>"].shape == (1, pipe.text_encoder.config.hidden_size)
