"""Triton model repositories: config.pbtxt matches the exported graph, and the graph takes what it says.

The written config.pbtxt is parsed back by protobuf's own text-format parser into message
types built here from Triton's schema (the fields of `inference.ModelConfig` that the writer
may use, names, numbers and enums as in triton-inference-server/common protobuf/model_config.proto):
a misspelt field, a wrong enum name or a syntax error fails the parse. Each input and output
is then checked against the graph read by `onnx.load`, and the copied model.onnx is run by
ONNX Runtime at batch 2 with inputs of exactly the configured dims.

The models are the zoo's demo and demo_seg at 128x128 with random weights (~2.5 s per export).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import rtdetr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, text_format  # noqa: E402

from rtdetr.cli.app import main  # noqa: E402
from rtdetr.export import write_triton_repository  # noqa: E402

SIZE = 128
NAMES = ["circle", "carré \"rouge\"", "tri\\angle"]  # quotes, a backslash and UTF-8 must survive the quoting
TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}
NUMPY = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}


def model_config_class():
    """`inference.ModelConfig` (the subset the writer uses), built from a descriptor."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="triton_subset.proto", package="inference", syntax="proto3")
    types = ["INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "STRING", "BF16"]
    fdp.enum_type.add(name="DataType").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=f"TYPE_{t}", number=i) for i, t in enumerate(types))

    def message(name, *fields, parent=fdp):
        m = (parent.message_type if parent is fdp else parent.nested_type).add(name=name)
        for fname, number, ftype, label, type_name in fields:
            m.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name)
        return m
    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelInput", ("name", 1, F.TYPE_STRING, one, None), ("data_type", 2, F.TYPE_ENUM, one, ".inference.DataType"),
            ("dims", 4, F.TYPE_INT64, many, None))
    message("ModelOutput", ("name", 1, F.TYPE_STRING, one, None),
            ("data_type", 2, F.TYPE_ENUM, one, ".inference.DataType"), ("dims", 3, F.TYPE_INT64, many, None))
    group = message("ModelInstanceGroup", ("name", 1, F.TYPE_STRING, one, None),
                    ("kind", 4, F.TYPE_ENUM, one, ".inference.ModelInstanceGroup.Kind"),
                    ("count", 2, F.TYPE_INT32, one, None))
    group.enum_type.add(name="Kind").value.extend(descriptor_pb2.EnumValueDescriptorProto(name=k, number=i)
                                                  for i, k in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]))
    message("ModelDynamicBatching", ("preferred_batch_size", 1, F.TYPE_INT32, many, None),
            ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, one, None))
    message("ModelParameter", ("string_value", 1, F.TYPE_STRING, one, None))
    config = message("ModelConfig", ("name", 1, F.TYPE_STRING, one, None), ("platform", 2, F.TYPE_STRING, one, None),
                     ("backend", 17, F.TYPE_STRING, one, None), ("max_batch_size", 4, F.TYPE_INT32, one, None),
                     ("input", 5, F.TYPE_MESSAGE, many, ".inference.ModelInput"),
                     ("output", 6, F.TYPE_MESSAGE, many, ".inference.ModelOutput"),
                     ("instance_group", 7, F.TYPE_MESSAGE, many, ".inference.ModelInstanceGroup"),
                     ("dynamic_batching", 11, F.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
                     ("parameters", 14, F.TYPE_MESSAGE, many, ".inference.ModelConfig.ParametersEntry"))
    entry = message("ParametersEntry", ("key", 1, F.TYPE_STRING, one, None),
                    ("value", 2, F.TYPE_MESSAGE, one, ".inference.ModelParameter"), parent=config)
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = model_config_class()


def read_config(model_dir) -> dict:
    """config.pbtxt parsed by protobuf's text-format parser, as a dict (enum names, int64 as str)."""
    message = text_format.Parse((model_dir / "config.pbtxt").read_text(), ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def graph_io(path) -> tuple[list, list]:
    """[(name, Triton type, dims with free sizes as -1)] of the graph's inputs and outputs, from onnx."""
    graph = onnx.load(str(path)).graph

    def describe(values):
        return [(v.name, TRITON_TYPES[v.type.tensor_type.elem_type],
                 [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values]
    return describe(graph.input), describe(graph.output)


def assert_matches_graph(config: dict, onnx_path, max_batch: int) -> None:
    """Every input and output of the graph, in order, with its name, type and dims (batch axis dropped)."""
    inputs, outputs = graph_io(onnx_path)
    assert config["max_batch_size"] == max_batch
    for section, values in (("input", inputs), ("output", outputs)):
        assert len(config[section]) == len(values)
        for entry, (name, dtype, dims) in zip(config[section], values):
            assert dims[0] == -1  # a dynamic batch axis in the graph itself
            expected = dims[1:] if max_batch > 0 else dims
            assert (entry["name"], entry["data_type"], [int(d) for d in entry["dims"]]) == (name, dtype, expected)


def run_as_configured(model_dir, config: dict, batch: int = 2) -> dict:
    """Run model.onnx with inputs shaped [batch, *dims] from the config; check the outputs' shapes too."""
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for entry in config["input"]:
        shape = [batch, *map(int, entry["dims"])]
        assert -1 not in shape
        feeds[entry["name"]] = (rng.random(shape).astype(np.float32) if entry["data_type"] == "TYPE_FP32"
                                else np.full(shape, SIZE, dtype=NUMPY[entry["data_type"]]))
    names = [o["name"] for o in config["output"]]
    results = dict(zip(names, session.run(names, feeds)))
    for entry in config["output"]:
        got = results[entry["name"]]
        assert got.dtype == NUMPY[entry["data_type"]]
        assert list(got.shape) == [batch, *map(int, entry["dims"])]
    return results


@pytest.fixture(scope="module")
def detect(tmp_path_factory):
    """The demo detector exported through `Detector.export(..., triton=DIR)`."""
    tmp = tmp_path_factory.mktemp("triton")
    det = rtdetr.load_model("demo", weights=None)
    det.class_names = list(NAMES)
    onnx_path = det.export(tmp / "demo.onnx", imgsz=SIZE, triton=tmp / "repo")
    return tmp / "repo" / "demo", onnx_path, det


def test_detector_repository(detect):
    model_dir, onnx_path, det = detect
    config = read_config(model_dir)
    assert config["name"] == "demo" and config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert_matches_graph(config, onnx_path, max_batch=8)
    assert [e["name"] for e in config["input"]] == ["images", "orig_target_sizes"]
    assert [e["name"] for e in config["output"]] == ["labels", "boxes", "scores"]
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": "100"}
    params = {k: json.loads(v["string_value"]) for k, v in config["parameters"].items()}
    assert params["class_names"] == NAMES == det.class_names
    assert (params["task"], params["imgsz"], params["postprocess"]) == ("detect", [SIZE, SIZE], True)
    assert (model_dir / "1" / "model.onnx").read_bytes() == open(onnx_path, "rb").read()
    out = run_as_configured(model_dir, config)
    assert out["boxes"].max() <= SIZE + 1e-3 and out["labels"].max() < det.num_classes


def test_segmentation_repository_from_the_cli(tmp_path, capsys):
    """`rtdetr export CHECKPOINT --triton DIR` on demo_seg: the masks output is configured, and served dims hold."""
    seg = rtdetr.load_model("demo_seg", weights=None)
    seg.class_names = list(NAMES)
    ckpt = seg.save(tmp_path / "seg.pt")
    out, repo = tmp_path / "seg.onnx", tmp_path / "models"
    assert main(["export", str(ckpt), "--weights", "none", "--out", str(out), "--imgsz", str(SIZE),
                 "--triton", str(repo)]) == 0
    printed = capsys.readouterr().out
    assert f"-v {repo.resolve()}:/models" in printed and "tritonserver --model-repository=/models" in printed
    config = read_config(repo / "seg")
    assert_matches_graph(config, out, max_batch=8)
    assert [e["name"] for e in config["output"]] == ["labels", "boxes", "scores", "masks"]
    assert [int(d) for d in config["output"][3]["dims"]] == [300, SIZE // 4, SIZE // 4]
    params = {k: json.loads(v["string_value"]) for k, v in config["parameters"].items()}
    assert params["class_names"] == NAMES and params["task"] == "segment"
    assert (repo / "seg" / "1" / "model.onnx").read_bytes() == out.read_bytes()
    run_as_configured(repo / "seg", config)


def test_fixed_batch(detect, tmp_path):
    """A graph with batch fixed at 1 is refused for batching, and served unbatched with full dims on request."""
    _, onnx_path, _ = detect
    proto = onnx.load(str(onnx_path))
    for value in [*proto.graph.input, *proto.graph.output]:  # what dynamic_batch=False exports: N = 1
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    with pytest.raises(ValueError, match="fixed batch.*max_batch_size=0"):
        write_triton_repository(fixed, tmp_path / "repo")
    model_dir = write_triton_repository(fixed, tmp_path / "repo", max_batch_size=0, instance_group="cpu")
    config = read_config(model_dir)
    assert config.get("max_batch_size", 0) == 0 and "dynamic_batching" not in config
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert [int(d) for d in config["input"][0]["dims"]] == [1, 3, SIZE, SIZE]
    with pytest.raises(ValueError, match="instance_group"):
        write_triton_repository(fixed, tmp_path / "repo", max_batch_size=0, instance_group="tpu")


def test_free_sizes_are_minus_one(detect, tmp_path):
    """Sizes the graph leaves free (a dynamic_hw export's H and W) are written as -1."""
    _, onnx_path, _ = detect
    proto = onnx.load(str(onnx_path))
    for axis, name in ((2, "H"), (3, "W")):
        proto.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    free = tmp_path / "free.onnx"
    onnx.save(proto, str(free))
    config = read_config(write_triton_repository(free, tmp_path / "repo"))
    assert_matches_graph(config, free, max_batch=8)
    assert [int(d) for d in config["input"][0]["dims"]] == [3, -1, -1]
