"""ONNX export: the graph's interface, its metadata, its operators, dynamic sizes.

Most tests use a tiny RT-DETRv2 (random weights, exports in ~1 s); parity of the released
architectures with PyTorch, per runtime, is in test_runtimes.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import rtdetr
from rtdetr import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig, build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rtdetr.export import export_onnx, op_types  # noqa: E402
from rtdetr.runtime import OnnxRuntimeModel, read_metadata  # noqa: E402

SIZE = 160
TINY = ModelConfig(
    name="tiny", num_classes=3, backbone=BackboneConfig("presnet18"),
    encoder=EncoderConfig(hidden_dim=64, dim_feedforward=128, expansion=0.5, depth_mult=0.34),
    decoder=DecoderConfig(hidden_dim=64, num_layers=2, num_queries=50, dim_feedforward=128,
                          num_points=(2, 2, 2), num_denoising=0),
)


@pytest.fixture(scope="module")
def tiny() -> rtdetr.RTDETR:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    model.class_names = ["circle", "square", "triangle"]
    return model


@pytest.fixture(scope="module")
def graphs(tiny, tmp_path_factory) -> dict:
    """The tiny model exported both ways at 160x160: {'detections': path, 'raw': path}."""
    out = tmp_path_factory.mktemp("onnx")
    return {"detections": export_onnx(tiny, out / "tiny.onnx", imgsz=SIZE),
            "raw": export_onnx(tiny, out / "tiny_raw.onnx", imgsz=SIZE, postprocess=False)}


def io_of(path) -> tuple[dict, dict]:
    """{name: (elem_type, dims)} of the graph's inputs and outputs; dims are ints or names."""
    graph = onnx.load(str(path)).graph

    def describe(values):
        return {v.name: (v.type.tensor_type.elem_type,
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values}
    return describe(graph.input), describe(graph.output)


def max_set_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rows of a and b paired one to one (min-cost assignment of L-inf distances): the largest distance."""
    dist = torch.cdist(a.double(), b.double(), p=float("inf"))
    rows, cols = linear_sum_assignment(dist.numpy())
    return dist[rows, cols].max().item()


def test_detection_graph_interface(graphs):
    """The official deploy interface: images + orig_target_sizes in, labels, boxes, scores out."""
    inputs, outputs = io_of(graphs["detections"])
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert inputs == {"images": (f32, ["N", 3, SIZE, SIZE]), "orig_target_sizes": (i64, ["N", 2])}
    k = min(300, TINY.decoder.num_queries * TINY.num_classes)  # top-k over queries x classes
    assert outputs == {"labels": (i64, ["N", k]), "boxes": (f32, ["N", k, 4]), "scores": (f32, ["N", k])}
    onnx.checker.check_model(str(graphs["detections"]), full_check=True)


def test_raw_graph_interface(graphs):
    inputs, outputs = io_of(graphs["raw"])
    q, c = TINY.decoder.num_queries, TINY.num_classes
    assert list(inputs) == ["images"]
    assert {k: v[1] for k, v in outputs.items()} == {"pred_logits": ["N", q, c], "pred_boxes": ["N", q, 4]}


def test_metadata_carries_names_and_options(graphs, tiny):
    meta = read_metadata(graphs["detections"])
    assert meta["class_names"] == tiny.class_names and meta["num_classes"] == 3
    assert meta["imgsz"] == [SIZE, SIZE] and meta["postprocess"] and meta["num_top"] == 300
    assert meta["decoder_layers"] == 2 and meta["exporter"] == "torchscript"
    assert read_metadata(graphs["raw"])["postprocess"] is False


def test_detections_match_eager_for_any_batch(graphs, tiny):
    """The in-graph post-processing is `rtdetr.postprocess`, batch by batch (dynamic batch)."""
    x = torch.rand(3, 3, SIZE, SIZE)
    sizes = torch.tensor([[640, 480], [SIZE, SIZE], [100, 300]])
    with torch.no_grad():
        expected = rtdetr.postprocess(tiny(x), sizes)
    got = OnnxRuntimeModel(graphs["detections"], threads=2).detect(x, sizes)
    for e, g in zip(expected, got):
        ours = torch.cat([g["labels"][:, None] * 10.0, g["scores"][:, None], g["boxes"] / 640], 1)
        theirs = torch.cat([e["labels"][:, None] * 10.0, e["scores"][:, None], e["boxes"] / 640], 1)
        assert max_set_distance(theirs, ours) < 1e-5


def test_raw_outputs_match_eager(graphs, tiny):
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = tiny(x)
    got = OnnxRuntimeModel(graphs["raw"], threads=2)(x)
    for i in range(2):
        theirs = torch.cat([expected["pred_logits"][i], expected["pred_boxes"][i]], 1)
        assert max_set_distance(theirs, torch.cat([got["pred_logits"][i], got["pred_boxes"][i]], 1)) < 1e-5


def test_bilinear_models_use_gridsample(graphs):
    assert "GridSample" in op_types(graphs["raw"])


def test_discrete_sampling_exports_without_gridsample(tmp_path):
    """rtdetrv2_r18vd_dsp samples by gathering cells: runtimes without GridSample can run it."""
    model = rtdetr.create_model("rtdetrv2_r18vd_dsp").eval()
    ops = op_types(export_onnx(model, tmp_path / "dsp.onnx", imgsz=320, postprocess=False))
    assert "GridSample" not in ops
    assert "GatherElements" in ops


def test_dynamic_hw_graph_follows_the_input_size(tiny, tmp_path):
    """With dynamo, anchors and position embeddings are computed in the graph: one graph, any size.

    Also checks that exporting leaves the model's per-size caches clean (tracing puts fake
    tensors there, which later eager calls must not see).
    """
    pytest.importorskip("onnxscript")
    path = export_onnx(tiny, tmp_path / "dyn.onnx", imgsz=SIZE, postprocess=False, dynamic_hw=True)
    inputs, _ = io_of(path)
    assert inputs["images"][1][0] == "N" and all(isinstance(d, str) for d in inputs["images"][1][2:])
    assert read_metadata(path)["imgsz"] is None
    runtime = OnnxRuntimeModel(path, threads=2)
    for h, w in [(SIZE, SIZE), (224, 320)]:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            expected = tiny(x)  # a real tensor, not a leftover of tracing
        got = runtime(x)
        for i in range(2):
            theirs = torch.cat([expected["pred_logits"][i], expected["pred_boxes"][i]], 1)
            assert max_set_distance(theirs, torch.cat([got["pred_logits"][i], got["pred_boxes"][i]], 1)) < 1e-4


def test_fixed_size_export_rejects_other_sizes_and_bad_options(graphs, tiny, tmp_path):
    runtime = OnnxRuntimeModel(graphs["raw"])
    with pytest.raises(ValueError, match="exported for 160x160"):
        runtime(np.zeros((1, 3, 320, 320), np.float32))
    with pytest.raises(ValueError, match="dynamo"):
        export_onnx(tiny, tmp_path / "x.onnx", dynamic_hw=True, dynamo=False)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny, tmp_path / "x.onnx", opset=16)
    with pytest.raises(ValueError, match="multiple of 32"):
        export_onnx(tiny, tmp_path / "x.onnx", imgsz=300)


def test_decoder_layers_are_baked_in(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "one_layer.onnx", imgsz=SIZE, postprocess=False, decoder_layers=1)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = tiny(x, num_decoder_layers=1)
    runtime = OnnxRuntimeModel(path)
    got = runtime(x, num_decoder_layers=1)
    theirs = torch.cat([expected["pred_logits"][0], expected["pred_boxes"][0]], 1)
    assert max_set_distance(theirs, torch.cat([got["pred_logits"][0], got["pred_boxes"][0]], 1)) < 1e-5
    with pytest.raises(ValueError, match="decoder layers"):
        runtime(x, num_decoder_layers=2)
