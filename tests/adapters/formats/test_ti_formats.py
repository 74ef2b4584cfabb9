"""Textual inversion in: diffusers safetensors, A1111 `.pt` (weights_only) and A1111 safetensors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import ReadCaps, load_adapter
from adapters.types import TextualInversion
from tests.adapters.builders import safetensors_bytes, torch_save_bytes


def test_diffusers_single_and_multi_vector() -> None:
    one = load_adapter(safetensors_bytes({"<cat>": torch.randn(32)}))
    assert isinstance(one, TextualInversion) and one.tokens["<cat>"].shape == (1, 32)
    three = load_adapter(safetensors_bytes({"<cat>": torch.randn(3, 32)}), token="<my-cat>")
    assert isinstance(three, TextualInversion) and list(three.tokens) == ["<my-cat>"]
    assert three.tokens["<my-cat>"].shape == (3, 32)


def test_bad_token_names_and_shapes() -> None:
    with pytest.raises(AdapterError, match="without spaces"):
        load_adapter(safetensors_bytes({"two words": torch.randn(32)}))
    with pytest.raises(AdapterError, match="could not tell|expected \\[D\\]"):
        load_adapter(safetensors_bytes({"<cat>": torch.randn(2, 3, 4)}))


def test_a1111_pt() -> None:
    vectors = torch.randn(2, 32, requires_grad=True)
    data = torch_save_bytes(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "shiny", "step": 500}
    )
    adapter = load_adapter(data)
    assert isinstance(adapter, TextualInversion)
    torch.testing.assert_close(adapter.tokens["shiny"], vectors.detach())
    assert list(load_adapter(data, token="<shiny>").tokens) == ["<shiny>"]


def test_bare_tensor_pt_needs_a_token() -> None:
    data = torch_save_bytes(torch.randn(32))
    with pytest.raises(AdapterError, match="does not name its token"):
        load_adapter(data)
    assert list(load_adapter(data, token="<t>").tokens) == ["<t>"]


def test_a1111_safetensors_emb_params() -> None:
    data = safetensors_bytes({"emb_params": torch.randn(4, 32)}, {"name": "glow"})
    adapter = load_adapter(data)
    assert isinstance(adapter, TextualInversion) and adapter.tokens["glow"].shape == (4, 32)


def test_pt_size_cap() -> None:
    data = torch_save_bytes({"string_to_param": {"*": torch.randn(64, 32)}, "name": "x"})
    with pytest.raises(AdapterError, match="limit for pickled files"):
        load_adapter(data, caps=ReadCaps(max_pickle_bytes=1024))


def test_pt_with_nan_is_refused() -> None:
    data = torch_save_bytes({"string_to_param": {"*": torch.tensor([[float("nan")] * 4])}, "name": "x"})
    with pytest.raises(AdapterError, match="NaN"):
        load_adapter(data)


class Payload:
    """Unpickling this object would create `path`: the attack a malicious `.pt` carries."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.path),))


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_payload_does_not_run(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    obj = {"string_to_param": {"*": torch.randn(1, 32)}, "name": "x", "evil": Payload(marker)}
    if legacy:
        buffer = io.BytesIO()
        torch.save(obj, buffer, _use_new_zipfile_serialization=False)
        data = buffer.getvalue()
    else:
        data = torch_save_bytes(obj)
    with pytest.raises(AdapterError, match="only tensors and plain containers"):
        load_adapter(data)
    assert not marker.exists()
    torch.load(io.BytesIO(data), weights_only=False)  # control: a full unpickle does run the payload
    assert marker.exists()
