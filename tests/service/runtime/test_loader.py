"""The backends are declared once (service/core/settings.py): the settings accept exactly those, and the loader
knows each of them and names them when refusing another."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.settings import BACKENDS, Settings
from service.runtime.loader import load_backbone_info, load_runtime


def test_the_settings_accept_exactly_the_declared_backends() -> None:
    assert BACKENDS == ("pytorch", "onnxruntime", "tensorrt")
    assert [Settings(backend=b).backend for b in BACKENDS] == list(BACKENDS)
    with pytest.raises(ValidationError):
        Settings(backend="openvino")


def test_an_unknown_backend_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'openvino': choose one of pytorch, onnxruntime, tensorrt"):
        load_runtime("openvino", tmp_path, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pytorch"])
def test_exported_backends_ask_for_an_export(backend: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"the {backend} backend runs exported graphs"):
        load_backbone_info(backend, tmp_path)  # type: ignore[arg-type]
