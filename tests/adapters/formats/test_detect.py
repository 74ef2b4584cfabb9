from __future__ import annotations

import pytest
import torch

from adapters.errors import AdapterError
from adapters.formats import ReadCaps, detect_kind, load_adapter
from adapters.formats.safetensors_io import read_header
from tests.adapters.builders import safetensors_bytes


@pytest.mark.parametrize(
    ("tensors", "metadata", "kind"),
    [
        ({"unet.a.lora_A.weight": torch.ones(1, 2), "unet.a.lora_B.weight": torch.ones(2, 1)}, None, "lora"),
        ({"lora_unet_a.lora_down.weight": torch.ones(1, 2), "lora_unet_a.alpha": torch.tensor(1.0)}, None, "lora"),
        ({"<cat>": torch.ones(2, 8)}, None, "textual_inversion"),
        ({"emb_params": torch.ones(2, 8)}, None, "textual_inversion"),
        ({"vpt.0": torch.ones(2, 8)}, {"kind": "vpt"}, "vpt"),
    ],
)
def test_kinds(tensors: dict, metadata: dict | None, kind: str) -> None:
    assert detect_kind(read_header(safetensors_bytes(tensors, metadata), ReadCaps())) == kind


def test_unknown_content() -> None:
    with pytest.raises(AdapterError, match="could not tell what kind"):
        load_adapter(safetensors_bytes({"model.conv.weight": torch.ones(2, 2, 3, 3)}))
    with pytest.raises(AdapterError, match="not a safetensors file"):
        load_adapter(b"GIF89a" + b"\0" * 32)
