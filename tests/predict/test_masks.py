"""Instance masks in prediction results: `Masks` formats, COCO JSON, drawing, and the predictor
pasting a segmentation backend's mask logits (conf filtering, mask_threshold, mask_crop).

The expected masks are worked out here with numpy's own bilinear upsampling (PyTorch's
`align_corners=False` rule written out), not with the library's `paste_masks`.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.core.masks import decode_rle, segmentation_to_mask
from rtdetr.predict import Masks, Predictor, Result, predict
from rtdetr.predict.draw import MASK_ALPHA, colour
from rtdetr.predict.results import Boxes
from tests.predict.conftest import picture

PIC_W, PIC_H = 160, 96                 # the picture (w x h); the network input is 64 x 64
NET = 64
GRID = NET // 4                        # mask logits come at 1/4 of the input: 16 x 16


def upsample(logits: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear upsampling [k, h, w] -> [k, out_h, out_w], half-pixel centres, edges clamped."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), lo), 1 - (src - lo))
        np.add.at(m, (np.arange(n_out), hi), src - lo)
        return m
    wy, wx = weights(logits.shape[1], out_h), weights(logits.shape[2], out_w)
    return np.einsum("yh,khw,xw->kyx", wy, logits.astype(np.float64), wx)


class MaskBackend:
    """A segmentation backend with fixed answers: every picture gets `detections` (its mask
    logits at 1/4 of the 64x64 network input); records the sizes it was asked to scale to."""

    precision = "fp32"
    imgsz = (NET, NET)
    num_classes = 3
    class_names = ["cat", "dog", "kite"]

    def __init__(self, detections: dict[str, torch.Tensor]):
        self.detections = detections
        self.sizes: list[list[int]] = []

    def to(self, device):
        return self

    def eval(self):
        return self

    def detect(self, images, orig_sizes_wh, num_top=None, category_ids=None):
        self.sizes += torch.as_tensor(orig_sizes_wh).tolist()
        return [dict(self.detections) for _ in range(len(images))]


def mask_detections(seed: int = 0) -> dict[str, torch.Tensor]:
    """3 detections (scores 0.9, 0.6, 0.3) whose logits are smooth blobs plus noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:GRID, :GRID]
    blobs = [4 - ((xs - cx) ** 2 + (ys - cy) ** 2) / r for cx, cy, r in ((4, 5, 3.0), (11, 8, 6.0), (8, 12, 2.0))]
    logits = np.stack(blobs) + rng.normal(0, 0.3, size=(3, GRID, GRID))
    boxes = torch.tensor([[10.0, 10.0, 80.0, 60.0], [90.0, 20.0, 150.0, 90.0], [60.0, 50.0, 100.0, 96.0]])
    return {"labels": torch.tensor([0, 1, 2]), "boxes": boxes, "scores": torch.tensor([0.9, 0.6, 0.3]),
            "masks": torch.from_numpy(logits).float()}


def expected_masks(det, rows, threshold=0.5, crop=True) -> np.ndarray:
    up = upsample(det["masks"][rows].numpy(), PIC_H, PIC_W) > math.log(threshold / (1 - threshold))
    if crop:
        cx, cy = np.arange(PIC_W) + 0.5, np.arange(PIC_H) + 0.5
        for k, (x1, y1, x2, y2) in enumerate(det["boxes"][rows].tolist()):
            inside = ((cy >= y1) & (cy <= y2))[:, None] & ((cx >= x1) & (cx <= x2))[None]
            up[k] &= inside
    return up


GREY = np.full((PIC_H, PIC_W, 3), 100, np.uint8)


# ---------------------------------------------------------------- the predictor


def test_predictor_pastes_the_kept_masks():
    det = mask_detections()
    backend = MaskBackend(det)
    (r,) = predict(backend, GREY, conf=0.5)
    assert backend.sizes == [[PIC_W, PIC_H]]
    assert len(r) == 2 and len(r.masks) == 2 and r.masks.orig_shape == (PIC_H, PIC_W)
    assert r.masks.data.dtype == torch.bool and r.masks.data.shape == (2, PIC_H, PIC_W)
    expected = expected_masks(det, [0, 1])
    assert 200 < expected[0].sum() < expected[1].sum() < PIC_W * PIC_H / 2   # real masks, not all or nothing
    assert (r.masks.data.numpy() == expected).all()
    (everything,) = predict(backend, GREY, conf=0.0)
    assert (everything.masks.data.numpy() == expected_masks(det, [0, 1, 2])).all()
    (nothing,) = predict(backend, GREY, conf=0.95)
    assert len(nothing) == 0 and nothing.masks.data.shape == (0, PIC_H, PIC_W) and nothing.to_coco(1) == []


def test_mask_threshold_and_crop():
    det = mask_detections()
    backend = MaskBackend(det)
    (tight,) = predict(backend, GREY, conf=0.5, mask_threshold=0.9)
    assert (tight.masks.data.numpy() == expected_masks(det, [0, 1], threshold=0.9)).all()
    (loose,) = predict(backend, GREY, conf=0.5, mask_threshold=0.1)
    assert (loose.masks.data.numpy() == expected_masks(det, [0, 1], threshold=0.1)).all()
    normal = predict(backend, GREY, conf=0.5)[0].masks.area
    assert (tight.masks.area < normal).all() and (normal < loose.masks.area).all()
    (raw,) = predict(backend, GREY, conf=0.5, mask_threshold=0.1, mask_crop=False)
    expected = expected_masks(det, [0, 1], threshold=0.1, crop=False)
    assert (raw.masks.data.numpy() == expected).all()
    assert (loose.masks.area < raw.masks.area).all()           # the default crop did clear something
    with pytest.raises(ValueError, match="mask_threshold is a probability"):
        Predictor(backend, mask_threshold=1.0)


def test_detection_models_have_no_masks(detector):
    (r,) = predict(detector, picture(64, 64, (8, 8, 40, 40)), imgsz=64)
    assert r.masks is None and "segmentation" not in r.to_coco(1)[0]
    assert (r.plot() == r.plot(masks=False)).all()


def test_run_folder_carries_rle(tmp_path):
    det = mask_detections()
    predict(MaskBackend(det), GREY, conf=0.5, save=True, out=tmp_path / "run")
    preds = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert [p["category_id"] for p in preds] == [0, 1]
    assert (decode_rle([p["segmentation"] for p in preds]) == expected_masks(det, [0, 1])).all()
    saved = np.asarray(Image.open(tmp_path / "run" / "image0.jpg"))
    assert saved.shape == (PIC_H, PIC_W, 3)


# ---------------------------------------------------------------- Masks


def disc(cx, cy, r, h=PIC_H, w=PIC_W) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r


def two_masks() -> Masks:
    square = np.zeros((PIC_H, PIC_W), bool)
    square[20:50, 30:70] = True
    return Masks(np.stack([square, disc(110, 50, 25)]))


def test_masks_formats_round_trip():
    m = two_masks()
    assert len(m) == 2 and m.orig_shape == (PIC_H, PIC_W) and repr(m) == "Masks(2 masks of 160x96)"
    assert m.area.tolist() == [30 * 40, int(disc(110, 50, 25).sum())]
    rles = m.rle
    assert [r["size"] for r in rles] == [[PIC_H, PIC_W]] * 2 and all(isinstance(r["counts"], str) for r in rles)
    assert (decode_rle(rles) == m.data.numpy()).all()
    assert torch.equal(Masks.from_rle(json.loads(json.dumps(rles)), (PIC_H, PIC_W)).data, m.data)
    assert len(Masks.from_rle([], (PIC_H, PIC_W))) == 0
    with pytest.raises(ValueError, match="for a picture of"):
        Masks(m.data, (PIC_W, PIC_H))


def test_polygons_without_opencv_say_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)   # import cv2 raises ImportError, as without OpenCV
    with pytest.raises(ImportError, match="OpenCV") as e:
        two_masks().polygons
    assert "\n" not in str(e.value) and "pip install" in str(e.value)


def test_polygons_rasterise_back_to_the_mask():
    pytest.importorskip("cv2")
    m = two_masks()
    for mask, polygons in zip(m.data.numpy(), m.polygons):
        back = segmentation_to_mask(polygons, PIC_H, PIC_W)
        assert (back & mask).sum() / (back | mask).sum() >= 0.95


def result_with_masks(img: np.ndarray) -> Result:
    m = two_masks()
    boxes = torch.tensor([[30.0, 20.0, 70.0, 50.0], [85.0, 25.0, 135.0, 75.0]])
    return Result(boxes=Boxes(boxes, img.shape[:2]), scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([0, 5]),
                  names={i: f"class{i}" for i in range(6)}, orig_img=img, masks=m)


def test_to_coco_carries_rle():
    r = result_with_masks(GREY)
    coco = json.loads(json.dumps(r.to_coco(7, category_ids=[1, 2, 3, 4, 5, 6])))
    assert [set(d) for d in coco] == [{"image_id", "category_id", "bbox", "score", "segmentation"}] * 2
    assert [d["category_id"] for d in coco] == [1, 6]
    assert (decode_rle([d["segmentation"] for d in coco]) == r.masks.data.numpy()).all()


def test_plot_fills_masks_under_the_boxes(tmp_path):
    img = GREY.copy()
    img[:, ::7] = 30                                                 # some texture: columns 0, 7, ..., 49, ...
    r = result_with_masks(img)
    plotted = r.plot(labels=False, scores=False, line_width=1)
    bare = r.plot(labels=False, scores=False, line_width=1, masks=False)
    anywhere = r.masks.data.numpy().any(0)
    assert (plotted[~anywhere] == bare[~anywhere]).all()              # outside the masks: the boxes only
    near_boxes = np.zeros(anywhere.shape, bool)
    for x1, y1, x2, y2 in r.boxes.xyxy.round().int().tolist():
        near_boxes[max(y1 - 2, 0):y2 + 3, max(x1 - 2, 0):x2 + 3] = True
    untouched = ~anywhere & ~near_boxes
    assert untouched.sum() > PIC_W * PIC_H / 2 and (plotted[untouched] == img[untouched]).all()
    # inside a mask, away from the box outlines: alpha of the way to the class colour
    for (y, x), label in (((35, 50), 0), ((35, 49), 0), ((50, 110), 5), ((60, 105), 5)):
        want = np.rint(img[y, x] * (1 - MASK_ALPHA) + np.array(colour(label)) * MASK_ALPHA)
        assert (plotted[y, x] == want).all() and (bare[y, x] == img[y, x]).all(), (y, x)
    assert (r.orig_img == img).all()                                  # the original is not drawn on
    path = r.save(tmp_path / "masks.png")
    assert (np.asarray(Image.open(path)) == r.plot()).all()


def test_overlapping_masks_put_the_best_on_top():
    img = GREY.copy()
    a = np.zeros((PIC_H, PIC_W), bool)
    a[10:40, 10:40] = True
    b = np.zeros_like(a)
    b[20:60, 20:60] = True
    r = Result(boxes=Boxes(torch.zeros(2, 4), img.shape[:2]), scores=torch.tensor([0.9, 0.5]),
               labels=torch.tensor([0, 1]), names={0: "a", 1: "b"}, orig_img=img, masks=Masks(np.stack([a, b])))
    plotted = r.plot(labels=False, scores=False)
    under = np.rint(100 * (1 - MASK_ALPHA) + np.array(colour(1)) * MASK_ALPHA)
    on_top = np.rint(under * (1 - MASK_ALPHA) + np.array(colour(0)) * MASK_ALPHA)
    assert np.abs(plotted[30, 30].astype(int) - on_top).max() <= 1  # blended in float, rounded once
    assert (plotted[50, 50] == under).all()
