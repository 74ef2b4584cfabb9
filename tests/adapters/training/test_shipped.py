"""The shipped adapters: each the file its report describes, for the backbone it was trained on, at the figures the
docs quote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from adapters.formats import load_adapter_file
from adapters.spec import build_spec
from adapters.training.data import CONCEPTS
from adapters.training.evaluate import CONCEPT_TARGET
from adapters.training.loop import load_frozen_pipeline
from adapters.types import LoRAAdapter, TextualInversion, VPTAdapter
from adapters.validate import ExportLimits, validate
from models.shapes.train_backbone import PIPELINE_DIR

SHIPPED = Path(__file__).resolve().parents[3] / "adapters" / "shipped"


def test_the_emblem_file_is_its_reports_and_fits_the_backbone() -> None:
    path = SHIPPED / "emblem.safetensors"
    report = json.loads((SHIPPED / "emblem.eval.json").read_text())
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["concept_pins"] == CONCEPTS["emblem"].values and report["token"] == "<emblem>"
    assert report["samples"] == 128 and report["concept_accuracy"] >= CONCEPT_TARGET
    assert report["regular_prompt_accuracy_delta"] == 0.0 and report["regular_images_unchanged"] == 1.0
    adapter = load_adapter_file(path)
    assert isinstance(adapter, TextualInversion) and set(adapter.tokens) == {"<emblem>"}
    pipe = load_frozen_pipeline(PIPELINE_DIR)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    assert spec.fingerprint == report["training"]["backbone_fingerprint"]
    validate(adapter, spec, ExportLimits(16, 8))


# name -> (kind, the concept accuracy the docs quote): shipped at their best measured figures (adapters/README.md)
TRAINED: dict[str, tuple[type, float]] = {"night": (VPTAdapter, 0.90625), "striped": (LoRAAdapter, 0.5234375)}


def test_the_trained_lora_and_vpt_are_their_reports() -> None:
    pipe = load_frozen_pipeline(PIPELINE_DIR)
    spec = build_spec(pipe.unet, pipe.text_encoder)
    for name, (kind, accuracy) in TRAINED.items():
        path = SHIPPED / f"{name}.safetensors"
        report = json.loads((SHIPPED / f"{name}.eval.json").read_text())
        assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), name
        assert report["concept"] == name and report["samples"] == 128
        assert report["concept_accuracy"] == accuracy, name
        adapter = load_adapter_file(path)
        assert isinstance(adapter, kind)
        assert spec.fingerprint == report["training"]["backbone_fingerprint"]
        validate(adapter, spec, ExportLimits(128, 8))
