"""Hostile and broken adapter files, built in memory for the tiny test backbone.

Each `BadFile` says what a tenant uploads and what the service must answer: a 4xx whose message names
the problem. The builders write raw bytes by hand where a library would refuse to write the lie.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.spec import BackboneSpec
from tests.adapters.builders import peft_to_kohya, safetensors_bytes, torch_save_bytes
from tests.service.api.adapter_files import lora_file, ti_file, vpt_file

Builder = Callable[[BackboneSpec, Path], bytes]  # (spec, sentinel path a payload would create) -> file bytes


@dataclass(frozen=True)
class BadFile:
    id: str
    build: Builder
    words: tuple[str, ...]  # each must appear in the error message
    status: int = 400
    form: dict[str, str] = field(default_factory=dict)


class Payload:
    """Unpickling this runs `touch sentinel`: the attack a malicious `.pt` carries."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.sentinel}",))


def raw_safetensors(header: dict | bytes, data: bytes = b"", claimed_length: int | None = None) -> bytes:
    """The safetensors layout (8-byte little-endian header length, JSON header, data) with any lie in it."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(encoded) if claimed_length is None else claimed_length
    return struct.pack("<Q", length) + encoded + data


def ti_entry(spec: BackboneSpec, rows: int = 1, begin: int = 0, dtype: str = "F32") -> dict:
    end = begin + rows * spec.token_embedding_dim * 4
    return {"dtype": dtype, "shape": [rows, spec.token_embedding_dim], "data_offsets": [begin, end]}


def ti_pt(spec: BackboneSpec, **extra: object) -> dict:
    return {"string_to_param": {"*": torch.randn(1, spec.token_embedding_dim)}, "name": "<x>", **extra}


def pickle_payload(spec: BackboneSpec, sentinel: Path) -> bytes:
    return torch_save_bytes(ti_pt(spec, evil=Payload(sentinel)))


def legacy_pickle_payload(spec: BackboneSpec, sentinel: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(ti_pt(spec, evil=Payload(sentinel)), buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def bare_pickle_payload(spec: BackboneSpec, sentinel: Path) -> bytes:
    return pickle.dumps({"string_to_param": {"*": Payload(sentinel)}}, protocol=2)


def legacy_lying_storage(spec: BackboneSpec, sentinel: Path) -> bytes:
    """A pre-1.6 `.pt` declaring a 4 GiB storage: torch's legacy reader allocates what the pickle declares."""
    buffer = io.BytesIO()
    torch.save({"*": torch.zeros(2, spec.token_embedding_dim)}, buffer, _use_new_zipfile_serialization=False)
    # the storage's persistent id is (..., "cpu", numel): swap the BININT1 numel for a BININT of 2^30 floats
    lie = rb"\g<1>J" + struct.pack("<i", 1 << 30)
    return re.sub(rb"(X\x03\x00\x00\x00cpuq.)K.", lie, buffer.getvalue(), count=1, flags=re.DOTALL)


def zip_bomb(spec: BackboneSpec, sentinel: Path, inflated_mib: int = 256) -> bytes:
    """A torch zip whose tensor member is deflated zeros: ~1000x smaller than what it inflates to."""
    source = zipfile.ZipFile(io.BytesIO(torch_save_bytes({"<x>": torch.zeros(1, spec.token_embedding_dim)})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            if info.filename.endswith("/data/0"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, "w", force_zip64=True) as f:
                    for _ in range(inflated_mib):
                        f.write(bytes(1 << 20))
            else:
                archive.writestr(info.filename, source.read(info.filename))
    return out.getvalue()


def truncated(spec: BackboneSpec, sentinel: Path) -> bytes:
    data = lora_file(spec)
    return data[: len(data) // 2]


def truncated_pt(spec: BackboneSpec, sentinel: Path) -> bytes:
    data = torch_save_bytes(ti_pt(spec))
    return data[: len(data) // 2]


def offsets_past_end(spec: BackboneSpec, sentinel: Path) -> bytes:
    entry = ti_entry(spec)
    entry["data_offsets"] = [0, 1 << 40]
    return raw_safetensors({"<x>": entry}, bytes(spec.token_embedding_dim * 4))


def huge_shape(spec: BackboneSpec, sentinel: Path) -> bytes:
    """Claims a [2^31, 2^31] tensor in 128 bytes of data: a reader trusting the shape would allocate 16 EiB."""
    entry = {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 128]}
    return raw_safetensors({"<x>": entry}, bytes(128))


def huge_header_length(spec: BackboneSpec, sentinel: Path) -> bytes:
    return raw_safetensors({"<x>": ti_entry(spec)}, bytes(spec.token_embedding_dim * 4), claimed_length=1 << 62)


def header_longer_than_file(spec: BackboneSpec, sentinel: Path) -> bytes:
    return raw_safetensors({"<x>": ti_entry(spec)}, bytes(spec.token_embedding_dim * 4), claimed_length=1 << 20)


def deeply_nested_header(spec: BackboneSpec, sentinel: Path) -> bytes:
    depth = 200_000  # 400 kB of brackets: inside the header cap, far past any JSON parser's recursion limit
    return raw_safetensors(b"{" + b'"a":' + b"[" * depth + b"]" * depth + b"}")


def int_dtype(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({"<x>": torch.ones(1, spec.token_embedding_dim, dtype=torch.int32)})


def bool_dtype(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({"<x>": torch.ones(1, spec.token_embedding_dim, dtype=torch.bool)})


def unknown_dtype(spec: BackboneSpec, sentinel: Path) -> bytes:
    return raw_safetensors({"<x>": ti_entry(spec, dtype="Q7")}, bytes(spec.token_embedding_dim * 4))


def nan_lora(spec: BackboneSpec, sentinel: Path) -> bytes:
    from safetensors.torch import load

    tensors = load(lora_file(spec))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone()
    tensors[first][0, 0] = float("nan")
    return safetensors_bytes(tensors)


def inf_embedding(spec: BackboneSpec, sentinel: Path) -> bytes:
    vectors = torch.zeros(1, spec.token_embedding_dim)
    vectors[0, 3] = float("inf")
    return safetensors_bytes({"<x>": vectors})


def f64_overflow(spec: BackboneSpec, sentinel: Path) -> bytes:
    """Finite in float64, infinite once cast to the float32 the runtime uses."""
    return safetensors_bytes({"<x>": torch.full((1, spec.token_embedding_dim), 1e300, dtype=torch.float64)})


def wrong_lora_dims(spec: BackboneSpec, sentinel: Path) -> bytes:
    target = spec.targets("unet")[0]
    return safetensors_bytes(
        {
            f"{target.name}.lora_A.weight": torch.randn(2, target.d_in + 8),
            f"{target.name}.lora_B.weight": torch.randn(target.d_out, 2),
        }
    )


def wrong_embedding_dims(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({"<x>": torch.randn(2, spec.token_embedding_dim + 8)})


def vpt_other_backbone(spec: BackboneSpec, sentinel: Path) -> bytes:
    data = vpt_file(spec)
    return data.replace(spec.fingerprint.encode(), b"0" * len(spec.fingerprint))


def vpt_format_1(spec: BackboneSpec, sentinel: Path) -> bytes:
    """A VPT of the format served before 2026-12-06 (tokens before norm1): refused with the command to convert it."""
    data = vpt_file(spec)
    return data.replace(b'"format_version":"2"', b'"format_version":"1"')


def rank_zero_lora(spec: BackboneSpec, sentinel: Path) -> bytes:
    target = spec.targets("unet")[0]
    return safetensors_bytes(
        {
            f"{target.name}.lora_A.weight": torch.zeros(0, target.d_in),
            f"{target.name}.lora_B.weight": torch.zeros(target.d_out, 0),
        }
    )


def rank_zero_lora_with_config(spec: BackboneSpec, sentinel: Path) -> bytes:
    """diffusers' LoRA metadata saying r = 0: alpha / r must not be computed."""
    target = spec.targets("unet")[0]
    tensors = {
        f"{target.name}.lora_A.weight": torch.zeros(0, target.d_in),
        f"{target.name}.lora_B.weight": torch.zeros(target.d_out, 0),
    }
    config = json.dumps({"unet.r": 0, "unet.lora_alpha": 4, "unet.use_rslora": True})
    return safetensors_bytes(tensors, {"lora_adapter_metadata": config})


def rank_over_export(spec: BackboneSpec, sentinel: Path) -> bytes:
    target = spec.targets("unet")[0]
    return safetensors_bytes(
        {
            f"{target.name}.lora_A.weight": torch.randn(64, target.d_in),
            f"{target.name}.lora_B.weight": torch.randn(target.d_out, 64),
        }
    )


def too_many_tensors(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({f"t{i}.lora_A.weight": torch.zeros(1) for i in range(4100)})  # just over the 4,096 cap


def too_many_pt_entries(spec: BackboneSpec, sentinel: Path) -> bytes:
    return torch_save_bytes({f"<t{i}>": torch.zeros(1) for i in range(4100)})  # just over the 4,096 cap


def too_many_ti_vectors(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({"<x>": torch.randn(70, spec.token_embedding_dim)})


def empty_embedding(spec: BackboneSpec, sentinel: Path) -> bytes:
    return safetensors_bytes({"<x>": torch.zeros(0, spec.token_embedding_dim)})


def non_utf8_metadata(spec: BackboneSpec, sentinel: Path) -> bytes:
    header = json.dumps({"__metadata__": {"name": "@@"}, "<x>": ti_entry(spec)}).encode()
    return raw_safetensors(header.replace(b"@@", b"\xff\xfe"), bytes(spec.token_embedding_dim * 4))


def non_string_metadata(spec: BackboneSpec, sentinel: Path) -> bytes:
    header = {"__metadata__": {"kind": {"nested": [1, 2]}}, "<x>": ti_entry(spec)}
    return raw_safetensors(header, bytes(spec.token_embedding_dim * 4))


def overlapping_tensors(spec: BackboneSpec, sentinel: Path) -> bytes:
    header = {"<x>": ti_entry(spec), "<y>": ti_entry(spec)}
    return raw_safetensors(header, bytes(spec.token_embedding_dim * 4))


def integer_pt(spec: BackboneSpec, sentinel: Path) -> bytes:
    return torch_save_bytes({"<x>": torch.ones(1, spec.token_embedding_dim, dtype=torch.int64)})


def kohya_lora(spec: BackboneSpec) -> tuple[str, dict[str, torch.Tensor]]:
    """A valid kohya-ss file on the first U-Net target (rank 2, alpha 2) and its kohya module name."""
    target = spec.targets("unet")[0]
    peft = {
        f"{target.name}.lora_A.weight": torch.randn(2, target.d_in),
        f"{target.name}.lora_B.weight": torch.randn(target.d_out, 2),
    }
    tensors = peft_to_kohya(peft, alpha=2.0)
    module = next(k for k in tensors if k.endswith(".lora_down.weight")).split(".")[0]
    return module, tensors


def kohya_variant(change: Callable[[str, dict[str, torch.Tensor]], None]) -> Builder:
    """diffusers' kohya converter trusts the file: these were KeyErrors and IndexErrors (500s) before."""

    def build(spec: BackboneSpec, sentinel: Path) -> bytes:
        module, tensors = kohya_lora(spec)
        change(module, tensors)
        return safetensors_bytes(tensors)

    return build


def _drop_up(m: str, t: dict) -> None:
    del t[f"{m}.lora_up.weight"]


def _drop_down(m: str, t: dict) -> None:
    del t[f"{m}.lora_down.weight"], t[f"{m}.alpha"]


def _vector_alpha(m: str, t: dict) -> None:
    t[f"{m}.alpha"] = torch.ones(3)


def _rank_mismatch(m: str, t: dict) -> None:
    t[f"{m}.lora_up.weight"] = torch.randn(t[f"{m}.lora_up.weight"].shape[0], 3)


def _one_d(m: str, t: dict) -> None:
    t[f"{m}.lora_down.weight"] = t[f"{m}.lora_down.weight"][0].clone()
    t[f"{m}.lora_up.weight"] = t[f"{m}.lora_up.weight"][:, 0].clone()


def _scalar_down_no_alpha(m: str, t: dict) -> None:
    del t[f"{m}.alpha"]
    t[f"{m}.lora_down.weight"] = torch.tensor(1.0)


def _unknown_module(m: str, t: dict) -> None:
    t["lora_unet_no_such_block.lora_down.weight"] = torch.randn(2, 8)
    t["lora_unet_no_such_block.lora_up.weight"] = torch.randn(8, 2)


def _conv_3x3(m: str, t: dict) -> None:
    down = t[f"{m}.lora_down.weight"]
    t[f"{m}.lora_down.weight"] = torch.randn(*down.shape[:2], 3, 3)


def _dotted_key(m: str, t: dict) -> None:
    t[f"{m}.x.lora_down.weight"] = t.pop(f"{m}.lora_down.weight")


def _locon(m: str, t: dict) -> None:
    """A kohya LoCon: its linear layer is fine, its 3x3 resnet convs have no banks; not applied in part."""
    for conv in ("down_blocks_0_resnets_0_conv1", "down_blocks_0_resnets_0_conv2"):
        t[f"lora_unet_{conv}.lora_down.weight"] = torch.randn(2, 32, 3, 3)
        t[f"lora_unet_{conv}.lora_up.weight"] = torch.randn(32, 2, 1, 1)
        t[f"lora_unet_{conv}.alpha"] = torch.tensor(2.0)


def _loha(m: str, t: dict) -> None:
    """LyCORIS LoHa beside a plain LoRA module: the file is refused whole, not applied as its LoRA part."""
    t |= {f"{m}_x.hada_{w}": torch.randn(4, 2) for w in ("w1_a", "w2_a")}
    t |= {f"{m}_x.hada_{w}": torch.randn(2, 4) for w in ("w1_b", "w2_b")}


def _lokr(m: str, t: dict) -> None:
    for key in [k for k in t if k.startswith(m)]:
        del t[key]
    t[f"{m}.lokr_w1"], t[f"{m}.lokr_w2"] = torch.randn(4, 4), torch.randn(8, 8)


def _dora(m: str, t: dict) -> None:
    t[f"{m}.dora_scale"] = torch.ones(1, t[f"{m}.lora_down.weight"].shape[1])


def peft_variant(suffixes: dict[str, tuple[int, ...]]) -> Builder:
    """LyCORIS / DoRA tensors in peft's layout on the first U-Net target; shapes: -1 is the module's width."""

    def build(spec: BackboneSpec, sentinel: Path) -> bytes:
        target = spec.targets("unet")[0]
        return safetensors_bytes(
            {
                f"{target.name}.{s}": torch.randn(*(target.d_in if d < 0 else d for d in shape))
                for s, shape in suffixes.items()
            }
        )

    return build


PEFT_LOHA = {"hada_w1_a": (-1, 2), "hada_w1_b": (2, -1), "hada_w2_a": (-1, 2), "hada_w2_b": (2, -1)}
PEFT_LOKR = {"lokr_w1": (4, 4), "lokr_w2": (8, 8)}
PEFT_DORA = {"lora_A.weight": (2, -1), "lora_B.weight": (-1, 2), "lora_magnitude_vector": (-1,)}


def lora_regex_pattern(spec: BackboneSpec, sentinel: Path) -> bytes:
    """peft would match this rank_pattern key as a regex against every module name: 21 s each."""
    config = json.dumps({"unet.r": 2, "unet.rank_pattern": {".*" * 8 + "z": 2}})
    return safetensors_bytes(load_lora(lora_file(spec)), {"lora_adapter_metadata": config})


def load_lora(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def random_bytes(spec: BackboneSpec, sentinel: Path) -> bytes:
    return b"GIF89a" + random.Random(0).randbytes(4096)


def empty(spec: BackboneSpec, sentinel: Path) -> bytes:
    return b""


BAD_FILES = [
    BadFile("pickle-reduce-zip", pickle_payload, ("only tensors and plain containers",)),
    BadFile("pickle-reduce-legacy", legacy_pickle_payload, ("legacy",)),
    BadFile("pickle-reduce-bare", bare_pickle_payload, ("legacy",)),
    BadFile("pt-legacy-lying-storage", legacy_lying_storage, ("legacy",)),
    BadFile("pt-zip-bomb", zip_bomb, ("compressed",)),
    BadFile("pt-truncated", truncated_pt, ("not a complete zip archive", "truncated")),
    BadFile("pt-integer-tensor", integer_pt, ("not a floating-point tensor",)),
    BadFile("pt-too-many-entries", too_many_pt_entries, ("the limit is",)),
    BadFile("safetensors-truncated", truncated, ("truncated",)),
    BadFile("offsets-past-end", offsets_past_end, ("lies outside the file",)),
    BadFile("huge-shape", huge_shape, ("disagrees with its shape",)),
    BadFile("huge-header-length", huge_header_length, ("header claims", "the limit is")),
    BadFile("header-longer-than-file", header_longer_than_file, ("truncated",)),
    BadFile("deeply-nested-header", deeply_nested_header, ("nested",)),
    BadFile("overlapping-tensors", overlapping_tensors, ("overlap",)),
    BadFile("dtype-int32", int_dtype, ("dtype I32",)),
    BadFile("dtype-bool", bool_dtype, ("dtype BOOL",)),
    BadFile("dtype-unknown", unknown_dtype, ("dtype Q7",)),
    BadFile("nan-lora", nan_lora, ("NaN",)),
    BadFile("inf-embedding", inf_embedding, ("infinite",)),
    BadFile("f64-overflows-f32", f64_overflow, ("overflows float32",)),
    BadFile("lora-wrong-dims", wrong_lora_dims, ("another backbone",)),
    BadFile("embedding-wrong-dims", wrong_embedding_dims, ("another model",)),
    BadFile("vpt-other-backbone", vpt_other_backbone, ("trained on backbone", "retrain")),
    BadFile("vpt-format-1", vpt_format_1, ("format_version 1", "diffplex adapters convert-vpt")),
    BadFile("lora-rank-zero", rank_zero_lora, ("rank 0",)),
    BadFile("lora-rank-zero-config", rank_zero_lora_with_config, ("rank 0",)),
    BadFile("lora-rank-over-export", rank_over_export, ("rank 64", "DIFFPLEX_ENGINE__LORA_RANK")),
    BadFile("too-many-tensors", too_many_tensors, ("4100 tensors", "the limit is")),
    BadFile("too-many-ti-vectors", too_many_ti_vectors, ("70 vectors",)),
    BadFile("empty-embedding", empty_embedding, ("expected [D] or [n, D]",)),
    BadFile("non-utf8-metadata", non_utf8_metadata, ("not valid JSON",)),
    BadFile("non-string-metadata", non_string_metadata, ("strings to strings",)),
    BadFile("random-bytes", random_bytes, ("not a safetensors file",)),
    BadFile("empty-file", empty, ("empty",)),
    BadFile("kind-mismatch", lambda spec, _: ti_file(spec, "<x>"), ("not lora",), form={"kind": "lora"}),
    BadFile("kind-oversized", lambda spec, _: ti_file(spec, "<x>"), ("kind has 4096",), form={"kind": "k" * 4096}),
    BadFile("token-oversized", lambda spec, _: ti_file(spec, "<x>"), ("token has 4096",), form={"token": "t" * 4096}),
    BadFile("ti-token-is-a-letter", lambda spec, _: ti_file(spec, "a"), ("'a' is already in the tokenizer's",)),
    BadFile("ti-token-is-a-word", lambda spec, _: ti_file(spec, "<x>"), ("'red' is already",), form={"token": "red"}),
    BadFile("ti-token-special", lambda spec, _: ti_file(spec, "<|endoftext|>"), ("already in the tokenizer",)),
    BadFile("kohya-down-without-up", kohya_variant(_drop_up), ("has lora_down.weight but no lora_up.weight",)),
    BadFile("kohya-up-without-down", kohya_variant(_drop_down), ("has lora_up.weight but no lora_down.weight",)),
    BadFile("kohya-alpha-vector", kohya_variant(_vector_alpha), ("alpha must be a scalar", "(3,)")),
    BadFile("kohya-rank-mismatch", kohya_variant(_rank_mismatch), ("lora_down has rank 2 but lora_up has rank 3",)),
    BadFile("kohya-1d-tensors", kohya_variant(_one_d), ("only linear",)),
    BadFile("kohya-scalar-down", kohya_variant(_scalar_down_no_alpha), ("lora_down is ()",)),
    BadFile("kohya-unknown-module", kohya_variant(_unknown_module), ("does not cover", "unet.no.such.block")),
    BadFile("kohya-conv-3x3", kohya_variant(_conv_3x3), ("3, 3)", "LoCon conv layers (1: ", "not supported yet")),
    BadFile("kohya-locon", kohya_variant(_locon), ("LoCon conv layers (2: ", "resnets_0_conv2", "without conv layers")),
    BadFile("kohya-loha", kohya_variant(_loha), ("LyCORIS LoHa layers on 1 module(s)", "Nothing was applied")),
    BadFile("kohya-lokr", kohya_variant(_lokr), ("LyCORIS LoKr layers on 1 module(s)", "plain LoRA")),
    BadFile("kohya-dora", kohya_variant(_dora), ("DoRA layers on 1 module(s)", "plain LoRA")),
    BadFile(
        "peft-loha", peft_variant(PEFT_LOHA), ("LyCORIS LoHa layers on 1 module(s)", "module(s): unet.down_blocks.0")
    ),
    BadFile(
        "peft-lokr", peft_variant(PEFT_LOKR), ("LyCORIS LoKr layers on 1 module(s)", "module(s): unet.down_blocks.0")
    ),
    BadFile("peft-dora", peft_variant(PEFT_DORA), ("DoRA layers on 1 module(s)", "module(s): unet.down_blocks.0")),
    BadFile("kohya-dotted-key", kohya_variant(_dotted_key), ("kohya keys are", ".x.lora_down.weight")),
    BadFile("lora-regex-pattern", lora_regex_pattern, ("is not a module path",)),
]
