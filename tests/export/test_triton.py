"""`diffplex export --triton`: the model repository of the tiny export parses as Triton model configs, and each
config's names, dims and data types are those of the ONNX graph it serves (read back with onnx)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import Message

from export.cli import main as export_main
from export.errors import ExportError
from export.manifest import Manifest
from export.triton import TENSORRT_PLATFORM, TritonOptions, graph_shapes, model_config, write_repository

# A subset of Triton's model_config.proto (package inference; field names, types and numbers as upstream), enough
# for what the writer emits: protobuf's own text-format parser then rejects unknown fields, bad enum names and
# wrong value types, as Triton does when it loads a repository.
DATA_TYPES = ["INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
DATA_TYPES += ["FP16", "FP32", "FP64", "STRING", "BF16"]
F = descriptor_pb2.FieldDescriptorProto
MESSAGES = {
    "ModelTensorReshape": [("shape", 1, F.TYPE_INT64, True, None)],
    "ModelInput": [
        ("name", 1, F.TYPE_STRING, False, None),
        ("data_type", 2, F.TYPE_ENUM, False, ".inference.DataType"),
        ("dims", 4, F.TYPE_INT64, True, None),
        ("reshape", 5, F.TYPE_MESSAGE, False, ".inference.ModelTensorReshape"),
        ("is_shape_tensor", 6, F.TYPE_BOOL, False, None),
        ("allow_ragged_batch", 7, F.TYPE_BOOL, False, None),
        ("optional", 8, F.TYPE_BOOL, False, None),
    ],
    "ModelOutput": [
        ("name", 1, F.TYPE_STRING, False, None),
        ("data_type", 2, F.TYPE_ENUM, False, ".inference.DataType"),
        ("dims", 3, F.TYPE_INT64, True, None),
        ("label_filename", 4, F.TYPE_STRING, False, None),
        ("reshape", 5, F.TYPE_MESSAGE, False, ".inference.ModelTensorReshape"),
        ("is_shape_tensor", 6, F.TYPE_BOOL, False, None),
    ],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, F.TYPE_INT32, True, None),
        ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, False, None),
        ("preserve_ordering", 3, F.TYPE_BOOL, False, None),
    ],
    "ModelInstanceGroup": [
        ("name", 1, F.TYPE_STRING, False, None),
        ("count", 2, F.TYPE_INT32, False, None),
        ("gpus", 3, F.TYPE_INT32, True, None),
        ("kind", 4, F.TYPE_ENUM, False, ".inference.ModelInstanceGroup.Kind"),
    ],
    "ModelConfig": [
        ("name", 1, F.TYPE_STRING, False, None),
        ("platform", 2, F.TYPE_STRING, False, None),
        ("max_batch_size", 4, F.TYPE_INT32, False, None),
        ("input", 5, F.TYPE_MESSAGE, True, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, True, ".inference.ModelOutput"),
        ("instance_group", 7, F.TYPE_MESSAGE, True, ".inference.ModelInstanceGroup"),
        ("default_model_filename", 8, F.TYPE_STRING, False, None),
        ("dynamic_batching", 11, F.TYPE_MESSAGE, False, ".inference.ModelDynamicBatching"),
        ("backend", 17, F.TYPE_STRING, False, None),
    ],
}
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def model_config_class() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="diffplex_test_model_config.proto", package="inference", syntax="proto3"
    )
    file.enum_type.add(name="DataType").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=f"TYPE_{n}", number=i) for i, n in enumerate(DATA_TYPES)
    )
    for name, fields in MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            message.field.add(name=field, number=number, type=kind, label=label, type_name=type_name)
        if name == "ModelInstanceGroup":
            message.enum_type.add(name="Kind").value.extend(
                descriptor_pb2.EnumValueDescriptorProto(name=k, number=i)
                for i, k in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"])
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = model_config_class()
DATA_TYPE = ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type


def parse(path: Path) -> Message:
    return text_format.Parse(path.read_text(), ModelConfig())


def onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def assert_matches_graph(tensors: list, values: list[onnx.ValueInfoProto], batched: bool) -> None:
    assert [t.name for t in tensors] == [v.name for v in values]
    for tensor, value in zip(tensors, values, strict=True):
        dims = onnx_dims(value)
        expected = ONNX_TO_TRITON[value.type.tensor_type.elem_type]
        assert DATA_TYPE.values_by_number[tensor.data_type].name == expected, tensor.name
        if batched:
            assert dims[0] == -1 and list(tensor.dims) == dims[1:], tensor.name
        else:
            assert list(tensor.dims) == dims, tensor.name


def test_repository_configs_match_the_onnx_graphs(tiny_export: tuple[Path, Manifest], tmp_path: Path) -> None:
    out, manifest = tiny_export
    repo = tmp_path / "triton"
    models = write_repository(out, repo)
    assert models == list(manifest.graphs)  # no TensorRT engines on this machine: ONNX models only
    for name in models:
        config = parse(repo / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx"
        graph = onnx.load(str(repo / name / "1" / "model.onnx"))
        batched = name.startswith("vae_")
        assert_matches_graph(list(config.input), list(graph.graph.input), batched)
        assert_matches_graph(list(config.output), list(graph.graph.output), batched)
        if batched:
            assert config.max_batch_size == 32 and config.HasField("dynamic_batching")
            assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
        else:  # per-request adapter banks: Triton must not concatenate requests
            assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
            banks = {t.name: list(t.dims) for t in config.input}
            assert banks["lora_a.0"][:2] == [-1, -1] and banks["lora_b.0"][2] == -1  # slots and the rank are dynamic


def test_fp16_variant_and_tensorrt_config(tiny_export: tuple[Path, Manifest], tmp_path: Path) -> None:
    out, manifest = tiny_export
    write_repository(out, tmp_path / "fp16", TritonOptions(variant="fp16", max_batch_size=8))
    vae = parse(tmp_path / "fp16" / "vae_decoder" / "config.pbtxt")
    assert vae.max_batch_size == 8 and list(vae.dynamic_batching.preferred_batch_size) == [8]
    half = onnx.load(str(tmp_path / "fp16" / "unet_cfg" / "1" / "model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)  # the fp16 graph it is
    entry = manifest.graphs["unet_cfg"]
    text = model_config(
        "unet_cfg_trt", entry, graph_shapes(out / entry.file), TENSORRT_PLATFORM, False, TritonOptions()
    )
    config = text_format.Parse(text, ModelConfig())
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == 1  # KIND_GPU
    assert [i.name for i in config.input] == [i["name"] for i in manifest.graphs["unet_cfg"].inputs]


def test_the_check_rejects_a_malformed_config() -> None:
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\ninput [ { name: "a" data_type: TYPE_FLOAT32 dims: [ -1 ] } ]', ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch: 4', ModelConfig())


def test_cli_writes_the_repository_of_an_existing_export(
    tiny_export: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, manifest = tiny_export
    assert export_main(["--out", str(out), "--triton", str(tmp_path / "repo")]) == 0
    assert '"models"' in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == sorted(manifest.graphs)
    with pytest.raises(ExportError, match="diffplex export"):
        write_repository(tmp_path / "missing", tmp_path / "r2")


@pytest.mark.parametrize("variant", ["base", "lora_fp16"])
def test_reduced_variants_are_not_served(tiny_export: tuple[Path, Manifest], tmp_path: Path, variant: str) -> None:
    out, _ = tiny_export
    with pytest.raises(ExportError, match="without some of the adapter inputs"):
        write_repository(out, tmp_path / variant, TritonOptions(variant=variant))
