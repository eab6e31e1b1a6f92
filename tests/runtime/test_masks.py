"""Masks from the PyTorch paths: the post-processor, `TorchBackend` and the fused inference copy.

The fused copy folds the mask head's conv + norm blocks like the rest of the model: its mask
logits differ from eager by float rounding only. Measured on the clear-mask fixture
(tests/runtime/seg_model.py): at most 1.3e-3 on logits up to ~120, 1.7e-5 of each mask's
largest |logit|, so the tolerance is 1e-4 of it (the folded weights are rounded once to
float32 and summed in another order; the pixel features reach ~1e2, and a logit sums 64
products of them with the query's embedding, each rounded to ~1e-7 relative). Pasted at
480x640, ~40 of 184 M pixels flip (right on an edge); the lowest IoU of a detection's mask
with eager's is 0.9993, against a required 0.99.
"""
from __future__ import annotations

import pytest
import torch

import rtdetr
from rtdetr.models import postprocess as pp
from rtdetr.models.postprocess import paste_masks, postprocess, postprocess_batched
from rtdetr.runtime import TorchBackend, optimize_for_inference
from tests.runtime.seg_model import ORIG_HW, SIZE, assert_clear, clear_mask_model, mask_iou, pair_detections

LOGIT_RTOL = 1e-4   # of each mask's largest |logit| (measured: 1.7e-5)
MIN_IOU = 0.99      # of each pasted mask with PyTorch eager's (measured: 0.9993)
SIZES = torch.tensor([[ORIG_HW[1], ORIG_HW[0]]] * 2)  # (w, h) per image


def assert_masks_match(expected: list[dict], got: list[dict]) -> None:
    """Pair the detections (near-tied scores may swap), then compare mask logits and pasted masks."""
    for e, g in zip(expected, got):
        assert g["masks"].dtype == torch.float32 and g["masks"].shape == e["masks"].shape
        idx = pair_detections(e, g)
        scale = e["masks"].abs().amax((1, 2), keepdim=True)
        assert ((g["masks"][idx] - e["masks"]).abs() <= LOGIT_RTOL * scale + 1e-6).all()
        iou = mask_iou(paste_masks(e["masks"], ORIG_HW), paste_masks(g["masks"][idx], ORIG_HW))
        assert iou.min() >= MIN_IOU, iou.min().item()


@pytest.fixture(scope="module")
def seg():
    model, images = clear_mask_model()
    with torch.no_grad():
        raw = model(images)
    dets = postprocess(raw, SIZES)
    assert_clear(dets)
    return model, images, raw, dets


def test_postprocess_masks_are_the_selected_queries(monkeypatch):
    """Each detection's mask is its own query's einsum with the features; only the K selected
    queries are multiplied (never all Q); a query kept with two classes gets its mask twice."""
    torch.manual_seed(0)
    n, q, c, d, k = 2, 10, 3, 8, 7
    logits, boxes = torch.randn(n, q, c), torch.rand(n, q, 4)
    queries, features = torch.randn(n, q, d), torch.randn(n, d, 6, 5)
    shapes = []
    real = pp.mask_logits
    monkeypatch.setattr(pp, "mask_logits", lambda qs, fs: shapes.append(tuple(qs.shape)) or real(qs, fs))
    labels, xyxy, scores, masks = postprocess_batched(logits, boxes, SIZES, k, queries, features)
    assert shapes == [(n, k, d)] and masks.shape == (n, k, 6, 5)
    query = torch.topk(logits.sigmoid().flatten(1), k).indices // c
    dense = torch.einsum("nqd,ndhw->nqhw", queries, features)
    for i in range(n):
        torch.testing.assert_close(masks[i], dense[i, query[i]])
    # The detections themselves are those of a detector's call.
    for a, b in zip((labels, xyxy, scores), postprocess_batched(logits, boxes, SIZES, k)):
        assert torch.equal(a, b)
    dets = postprocess({"pred_logits": logits, "pred_boxes": boxes, "mask_queries": queries,
                        "mask_features": features}, SIZES, num_top=k, category_ids=[5, 6, 7])
    for i, det in enumerate(dets):
        assert set(det) == {"labels", "boxes", "scores", "masks"}
        assert det["masks"].dtype == torch.float32 and torch.equal(det["masks"], masks[i])
    with pytest.raises(ValueError, match="both"):
        postprocess_batched(logits, boxes, SIZES, k, queries)


def test_detector_outputs_have_no_masks():
    torch.manual_seed(0)
    model = rtdetr.models.zoo.create_model("demo").eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    backend = TorchBackend(model, fused=False)
    assert set(backend(x)) == {"pred_logits", "pred_boxes"}
    assert set(backend.detect(x, SIZES[:1])[0]) == {"labels", "boxes", "scores"}
    assert len(postprocess_batched(torch.randn(1, 5, 2), torch.rand(1, 5, 4), SIZES[:1], 4)) == 3


def test_torch_backend_gives_mask_logits(seg):
    model, images, raw, dets = seg
    eager = TorchBackend(model, fused=False)
    assert set(eager(images)) == {"pred_logits", "pred_boxes", "mask_features", "mask_queries"}
    got = eager.detect(images, SIZES)
    for e, g in zip(dets, got):
        assert g["masks"].shape == (300, SIZE // 4, SIZE // 4)
        for key in e:
            assert torch.equal(e[key], g[key]), key
    assert_masks_match(dets, TorchBackend(model).detect(images, SIZES))  # the fused copy


def test_fused_copy_keeps_the_mask_head(seg):
    model, images, raw, dets = seg
    fast = optimize_for_inference(model, SIZE)
    assert fast.mask_head is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.mask_head.modules())  # folded
    with torch.no_grad():
        out = fast(images)
    assert set(out) == set(raw)
    for key in ("mask_features", "mask_queries"):
        assert out[key].dtype == torch.float32
        scale = raw[key].abs().max()
        assert (out[key] - raw[key]).abs().max() <= LOGIT_RTOL * scale, key
    assert_masks_match(dets, postprocess(out, SIZES))
    # The model itself is untouched: its norms are still there.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.mask_head.modules())
