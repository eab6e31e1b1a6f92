"""Exported segmentation graphs: their interface, and ONNX Runtime's and OpenVINO's masks equal PyTorch's.

The fixture is the clear-mask demo_seg of tests/runtime/seg_model.py (see there why a random
mask head would not do) at 160x160, exported once with the detections and the raw outputs
(keep_raw=True, ~2 s with the TorchScript exporter) and once raw (postprocess=False), each
from a batch-1 example and run on a batch of 2 (dynamic batch).

Tolerances, measured on this fixture (2 images x 300 detections):
- mask logits: ONNX Runtime at most 1.4e-3 from PyTorch, OpenVINO 2.0e-3, on logits up to
  ~120: 1.7e-5 and 2.4e-5 of each mask's largest |logit|; required within 1e-4 of it. fp32
  rounding: the runtimes' convolution and GEMM kernels sum in another order, and the pixel
  features reach ~1e2, so each logit (64 products) carries ~1e-5 relative error.
- pasted masks (`paste_masks` at 480x640, threshold 0, as the predictor and the evaluator do): ~36 of 184 M pixels flip, all on an edge; the lowest
  IoU of a detection's mask with PyTorch's is 0.99995 (ONNX Runtime) and 0.9993 (OpenVINO),
  against a required 0.99.
Detections are paired by label and box before comparing (near-tied scores may swap).
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import rtdetr

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rtdetr.export import export_onnx  # noqa: E402
from rtdetr.models.postprocess import postprocess  # noqa: E402
from rtdetr.runtime import OnnxRuntimeModel, load_exported, read_metadata  # noqa: E402
from tests.runtime.seg_model import SIZE, assert_clear, clear_mask_model  # noqa: E402
from tests.runtime.test_masks import SIZES, assert_masks_match  # noqa: E402

GRID = SIZE // 4


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    model, images = clear_mask_model()
    tmp = tmp_path_factory.mktemp("seg")
    with torch.no_grad():
        raw = model(images)
    dets = postprocess(raw, SIZES)
    assert_clear(dets)
    return types.SimpleNamespace(
        model=model, images=images, raw=raw, dets=dets,
        graph=export_onnx(model, tmp / "seg.onnx", imgsz=SIZE, keep_raw=True),
        raw_graph=export_onnx(model, tmp / "seg_raw.onnx", imgsz=SIZE, postprocess=False))


def io_of(path) -> tuple[dict, dict]:
    """{name: (elem_type, dims)} of the graph's inputs and outputs, in order; dims are ints or names."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        return {v.name: (v.type.tensor_type.elem_type,
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values}
    return describe(graph.input), describe(graph.output)


def test_segmentation_graph_interface(seg):
    """Detections, then `masks` [N, K, H/4, W/4] float32 logits, then the raw outputs and mask factors."""
    inputs, outputs = io_of(seg.graph)
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert inputs == {"images": (f32, ["N", 3, SIZE, SIZE]), "orig_target_sizes": (i64, ["N", 2])}
    cfg = seg.model.cfg
    q, c, d, k = cfg.decoder.num_queries, cfg.num_classes, cfg.mask.dim, 300
    assert outputs == {
        "labels": (i64, ["N", k]), "boxes": (f32, ["N", k, 4]), "scores": (f32, ["N", k]),
        "masks": (f32, ["N", k, GRID, GRID]),
        "pred_logits": (f32, ["N", q, c]), "pred_boxes": (f32, ["N", q, 4]),
        "mask_features": (f32, ["N", d, GRID, GRID]), "mask_queries": (f32, ["N", q, d])}
    assert read_metadata(seg.graph)["task"] == "segment"
    _, raw_outputs = io_of(seg.raw_graph)
    assert list(raw_outputs) == ["pred_logits", "pred_boxes", "mask_features", "mask_queries"]
    # Only the kept detections' logits are formed: one Einsum on the K gathered query embeddings.
    ops = [n.op_type for n in onnx.load(str(seg.graph)).graph.node]
    assert ops.count("Einsum") == 1


def test_detection_graph_has_no_masks(tmp_path):
    torch.manual_seed(0)
    model = rtdetr.models.zoo.create_model("demo").eval()
    path = export_onnx(model, tmp_path / "demo.onnx", imgsz=SIZE, keep_raw=True)
    _, outputs = io_of(path)
    assert list(outputs) == ["labels", "boxes", "scores", "pred_logits", "pred_boxes"]
    assert "task" not in read_metadata(path)  # a detector's metadata is as before
    runtime = OnnxRuntimeModel(path, threads=1)
    assert not runtime.segmentation
    x = torch.rand(1, 3, SIZE, SIZE)
    assert set(runtime.detect(x, SIZES[:1])[0]) == {"labels", "boxes", "scores"}
    assert set(runtime(x)) == {"pred_logits", "pred_boxes"}


def make_runtime(name: str, seg, tmp_path):
    """The seg graph under `name`: ONNX Runtime, OpenVINO on the ONNX file, or on its IR (.xml)."""
    if name == "onnxruntime":
        return OnnxRuntimeModel(seg.graph, threads=1)
    pytest.importorskip("openvino")
    from rtdetr.export import save_openvino
    from rtdetr.runtime import OpenVinoModel

    if name == "openvino":
        return OpenVinoModel(seg.graph, precision="fp32", threads=1)
    return load_exported(save_openvino(seg.graph, tmp_path / "seg.xml"), threads=1)  # .xml: OpenVINO


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "openvino-ir"])
def test_runtime_masks_match_pytorch(seg, tmp_path, name):
    """Batch of 2 through a graph traced at batch 1: per detection, logits and pasted masks."""
    runtime = make_runtime(name, seg, tmp_path)
    assert runtime.segmentation and "with masks" in repr(runtime)
    got = runtime.detect(seg.images, SIZES)
    assert [tuple(g["masks"].shape) for g in got] == [(300, GRID, GRID)] * 2
    assert_masks_match(seg.dets, got)
    raw = runtime(seg.images)  # the mask factors as the model gives them
    for key in ("mask_features", "mask_queries"):
        assert (raw[key] - seg.raw[key]).abs().max() <= 1e-4 * seg.raw[key].abs().max(), key


def test_raw_graph_detect_makes_the_masks(seg):
    """A raw graph's mask factors go through `rtdetr.postprocess` outside the graph, like PyTorch's."""
    runtime = OnnxRuntimeModel(seg.raw_graph, threads=1)
    assert runtime.segmentation and not runtime.postprocessed
    assert set(runtime(seg.images)) == {"pred_logits", "pred_boxes", "mask_features", "mask_queries"}
    assert_masks_match(seg.dets, runtime.detect(seg.images, SIZES))


def test_fixed_batch_graph_runs_in_chunks(seg, tmp_path):
    """A batch-1 graph runs a batch of 2 one image at a time; the masks come back for both."""
    path = export_onnx(seg.model, tmp_path / "fixed.onnx", imgsz=SIZE, dynamic_batch=False)
    _, outputs = io_of(path)
    assert outputs["masks"][1] == [1, 300, GRID, GRID]
    got = OnnxRuntimeModel(path, threads=1).detect(seg.images.numpy(), np.asarray(SIZES))
    assert_masks_match(seg.dets, got)
