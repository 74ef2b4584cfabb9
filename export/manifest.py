"""`manifest.json`: what an export directory holds, and the check a runtime runs before trusting it.

An export directory is self-contained for inference without diffusers or transformers models:
the graphs, the tokenizer files, the scheduler config, and the token embedding table (the host looks up
token vectors and splices textual-inversion vectors before the text-encoder graph).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.packing import RANK_AXIS, lora_a_name
from adapters.spec import BackboneSpec
from export.errors import ExportError
from export.graphs import TensorSpec, XLDims, graph_io
from export.step_cache import StepCacheDims

MANIFEST = "manifest.json"
# 2: the VPT banks hold tokens in attn1's input space, after the block's norm1 (`adapters.vpt`); a version-1
# graph applies norm1 to them again, so a runtime refuses it and asks for a new export.
FORMAT_VERSION = 2
TOKEN_EMBEDDINGS = "token_embeddings.safetensors"
TOKEN_EMBEDDING, TOKEN_EMBEDDING_2 = "token_embedding", "token_embedding_2"  # its tensors (the second: SDXL's)
# The U-Nets' reduced variants, each the graph contract less some adapter inputs. Their keys in
# `GraphEntry.variants` start with the family's name ("base", "base_ort_optimized", "base_fp16"):
# - base: no `adapter_slot` and no banks, for calls in which no row carries an adapter;
# - lora: the LoRA banks and no VPT banks, for calls in which no row carries VPT tokens (exported with P > 0).
# Exports made before a family have none of its variants, and a runtime then runs those calls on the full graph.
BASE_VARIANT = "base"
LORA_VARIANT = "lora"


def family_variant(family: str, variant: str | None = None) -> str:
    """The variant key of `family`'s counterpart of `variant` (None: the portable graph) -> "base", "lora_fp16"."""
    return family if variant is None else f"{family}_{variant}"


def in_family(family: str, variant: str) -> bool:
    return variant == family or variant.startswith(f"{family}_")


def base_variant(variant: str | None = None) -> str:
    return family_variant(BASE_VARIANT, variant)


def lora_variant(variant: str | None = None) -> str:
    return family_variant(LORA_VARIANT, variant)


def is_base_variant(variant: str) -> bool:
    return in_family(BASE_VARIANT, variant)


def is_lora_variant(variant: str) -> bool:
    return in_family(LORA_VARIANT, variant)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class GraphEntry:
    file: str
    inputs: list[dict]
    outputs: list[dict]
    dtype: str = "float32"
    external_data: list[str] = field(default_factory=list)  # weight files beside the graph (models > 2 GB)
    # "ort_optimized" / "fp16" / "tensorrt" -> file; the U-Nets also "base", "base_ort_optimized", "base_fp16"
    # (no adapter inputs: `inputs` less `adapter_slot` and the banks)
    variants: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    spec: BackboneSpec
    lora_rank: int  # the rank cap: the largest total rank a request may put on one module
    vpt_tokens: int
    opset: int
    latent_channels: int
    latent_size: int
    latent_multiple: int  # latent sides must be multiples of this (the U-Net's downsampling)
    vae_scale_factor: int
    scaling_factor: float
    text_dim: int
    prediction_type: str
    graphs: dict[str, GraphEntry]
    files: dict[str, str]  # relative path -> sha256, every file the export wrote
    source: str = ""
    torch_version: str = ""
    # SDXL: {"text_dim_2", "pooled_dim", "force_zeros_for_empty_prompt"}; None for SD-1.x/2.x (and not written)
    sdxl: dict[str, Any] | None = None
    # Step caching's split (export/step_cache.py) where the export has its graphs: the full U-Nets return their deep
    # features and the shallow U-Nets exist. None in exports made before it (and not written).
    step_cache: StepCacheDims | None = None

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    def graph_io(
        self, name: str, vpt_tokens: int | None = None, base: bool = False
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The inputs and outputs of graph `name` as this export wrote it (`vpt_tokens`: a LoRA-only variant's 0)."""
        vpt = self.vpt_tokens if vpt_tokens is None else vpt_tokens
        return graph_io(
            name,
            self.spec,
            self.rank_dim,
            vpt,
            self.latent_channels,
            self.text_dim,
            base,
            self.xl_dims,
            self.step_cache,
        )

    @property
    def xl_dims(self) -> XLDims | None:
        if self.sdxl is None:
            return None
        return XLDims(text_dim_2=int(self.sdxl["text_dim_2"]), pooled_dim=int(self.sdxl["pooled_dim"]))

    @property
    def rank_dim(self) -> int | str:
        """The rank dim of the graphs' LoRA banks as recorded: RANK_AXIS (each call's banks carry their own rank,
        up to `lora_rank`) or, in an export made before the axis was dynamic, the R every call must use."""
        first_bank = lora_a_name(0)
        for entry in self.graphs.values():
            for tensor in entry.inputs:
                if tensor["name"] == first_bank:
                    return tensor["shape"][1]
        return RANK_AXIS  # no graph takes LoRA banks: no call has a rank to fix

    @property
    def fixed_lora_rank(self) -> int | None:
        """The R of an older export's fixed-rank banks; None where the rank is per call."""
        dim = self.rank_dim
        return dim if isinstance(dim, int) else None

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "format_version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "source": self.source,
                "torch_version": self.torch_version,
                "opset": self.opset,
                "lora_rank": self.lora_rank,
                "vpt_tokens": self.vpt_tokens,
                "latent_channels": self.latent_channels,
                "latent_size": self.latent_size,
                "latent_multiple": self.latent_multiple,
                "vae_scale_factor": self.vae_scale_factor,
                "scaling_factor": self.scaling_factor,
                "text_dim": self.text_dim,
                "prediction_type": self.prediction_type,
                "spec": self.spec.to_dict(),
                "graphs": {name: vars(entry) for name, entry in self.graphs.items()},
                "files": self.files,
            }
            | ({"sdxl": self.sdxl} if self.sdxl is not None else {})
            | ({"step_cache": self.step_cache.to_dict()} if self.step_cache is not None else {})
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise ExportError(
                f"manifest format_version {data.get('format_version')!r} is not {FORMAT_VERSION}: "
                "re-run diffplex export"
            )
        try:
            return cls(
                spec=BackboneSpec.from_dict(data["spec"]),
                lora_rank=int(data["lora_rank"]),
                vpt_tokens=int(data["vpt_tokens"]),
                opset=int(data["opset"]),
                latent_channels=int(data["latent_channels"]),
                latent_size=int(data["latent_size"]),
                latent_multiple=int(data["latent_multiple"]),
                vae_scale_factor=int(data["vae_scale_factor"]),
                scaling_factor=float(data["scaling_factor"]),
                text_dim=int(data["text_dim"]),
                prediction_type=str(data["prediction_type"]),
                graphs={name: GraphEntry(**entry) for name, entry in data["graphs"].items()},
                files=dict(data["files"]),
                source=str(data.get("source", "")),
                torch_version=str(data.get("torch_version", "")),
                sdxl=_sdxl(data.get("sdxl")),
                step_cache=StepCacheDims.from_dict(data["step_cache"]) if data.get("step_cache") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"malformed manifest ({type(e).__name__}: {e}): re-run diffplex export") from e

    def save(self, export_dir: Path) -> Path:
        path = Path(export_dir) / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _sdxl(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    return {
        "text_dim_2": int(data["text_dim_2"]),
        "pooled_dim": int(data["pooled_dim"]),
        "force_zeros_for_empty_prompt": bool(data["force_zeros_for_empty_prompt"]),
    }


def record_files(export_dir: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(Path(export_dir) / name) for name in sorted(names)}


def load_manifest(export_dir: Path, expected_fingerprint: str | None = None, verify_hashes: bool = True) -> Manifest:
    """Read and check an export: every listed file present with its hash, and (when given) the backbone.

    A runtime passes the fingerprint of the backbone it serves: graphs exported from another backbone
    (or another version of it) are refused instead of silently producing wrong images.
    """
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        raise ExportError(f"{export_dir} has no {MANIFEST}: run `diffplex export --out {export_dir}` first")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON ({e}): re-run diffplex export") from e
    if expected_fingerprint is not None and manifest.fingerprint != expected_fingerprint:
        raise ExportError(
            f"{export_dir} was exported from backbone {manifest.fingerprint[:12]}, not the one being served "
            f"({expected_fingerprint[:12]}): re-export it from this model"
        )
    if verify_hashes:
        for name, digest in manifest.files.items():
            file = export_dir / name
            if not file.is_file():
                raise ExportError(f"{file} is listed in the manifest but missing: re-run diffplex export")
            if sha256_file(file) != digest:
                raise ExportError(f"{file} does not match its sha256 in the manifest (changed or corrupt)")
    return manifest
