from __future__ import annotations

from pathlib import Path

from adapters import ExportLimits, LoRAAdapter, TextualInversion, VPTAdapter, load_adapter_file, validate
from service.bench.adapter_files import load_spec, write_example


def test_example_adapters_are_valid_for_the_backbone(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = load_spec(tiny_model_dir)
    files = write_example(spec, tmp_path, loras=2)
    kinds = {}
    for path in files:
        adapter = load_adapter_file(path)
        validate(adapter, spec, ExportLimits(max_lora_rank=4, max_vpt_tokens=3))
        kinds[path.name] = type(adapter)
    assert kinds == {
        "lora-0.safetensors": LoRAAdapter,
        "lora-1.safetensors": LoRAAdapter,
        "ti-shiny.safetensors": TextualInversion,
        "vpt-0.safetensors": VPTAdapter,
    }
    assert files[0].read_bytes() != files[1].read_bytes()  # distinct seeds, distinct adapters
