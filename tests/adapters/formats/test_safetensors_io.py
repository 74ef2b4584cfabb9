from __future__ import annotations

import json
import struct

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats.caps import ReadCaps
from adapters.formats.safetensors_io import read_header, read_safetensors
from tests.adapters.builders import safetensors_bytes

CAPS = ReadCaps()


def raw_file(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_reads_tensors_and_metadata_as_float32() -> None:
    data = safetensors_bytes({"a": torch.ones(2, 3, dtype=torch.float16)}, {"kind": "x"})
    tensors, metadata = read_safetensors(data, CAPS)
    assert tensors["a"].dtype == torch.float32 and tensors["a"].shape == (2, 3)
    assert metadata == {"kind": "x"}


@pytest.mark.parametrize("cut", [4, 20, -3])
def test_truncated_file(cut: int) -> None:
    data = safetensors_bytes({"a": torch.ones(4, 4)})
    with pytest.raises(AdapterError, match="truncated|corrupt"):
        read_safetensors(data[:cut], CAPS)


def test_header_pointing_past_the_end() -> None:
    data = raw_file({"a": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, b"\0" * 16)
    with pytest.raises(AdapterError, match="outside the file"):
        read_header(data, CAPS)


def test_header_lying_about_the_shape() -> None:
    data = raw_file({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(AdapterError, match="disagrees with its shape"):
        read_header(data, CAPS)


def test_overlapping_tensors() -> None:
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    data = raw_file({"a": entry, "b": entry}, b"\0" * 16)
    with pytest.raises(AdapterError, match="overlap"):
        read_header(data, CAPS)


def test_header_length_over_cap_is_refused_before_parsing() -> None:
    data = struct.pack("<Q", 1 << 40) + b"{" + b" " * 64
    with pytest.raises(AdapterError, match="header claims"):
        read_header(data, CAPS)


def test_file_and_tensor_count_caps() -> None:
    data = safetensors_bytes({f"t{i}": torch.zeros(1) for i in range(5)})
    with pytest.raises(AdapterError, match="holds 5 tensors; the limit is 4"):
        read_safetensors(data, ReadCaps(max_tensors=4))
    with pytest.raises(AdapterError, match="the limit is 10"):
        read_safetensors(data, ReadCaps(max_bytes=10))


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(AdapterError, match="'bad' holds NaN"):
        read_safetensors(safetensors_bytes({"ok": torch.zeros(2), "bad": torch.tensor([1.0, float("nan")])}), CAPS)
    with pytest.raises(AdapterError, match="infinite"):
        read_safetensors(safetensors_bytes({"x": torch.tensor([float("inf")])}), CAPS)


def test_dtypes() -> None:
    with pytest.raises(AdapterError, match="dtype I64"):
        read_safetensors(safetensors_bytes({"ids": torch.arange(4)}), CAPS)
    tensors, _ = read_safetensors(safetensors_bytes({"x.alpha": torch.tensor(4)}), CAPS)  # integer scalars pass
    assert tensors["x.alpha"].item() == 4.0


def test_not_json_header() -> None:
    with pytest.raises(AdapterError, match="not valid JSON"):
        read_header(struct.pack("<Q", 4) + b"{{{{", CAPS)
