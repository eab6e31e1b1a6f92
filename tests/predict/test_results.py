"""The results object: box formats and their round trips, class names, COCO JSON, pictures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.core.coco_names import COCO_CATEGORY_IDS, COCO_NAMES
from rtdetr.predict import Boxes, predict
from rtdetr.predict.draw import colour
from tests.predict.conftest import ColourDetector, assert_box, picture

# A 640 x 480 picture (w x h), boxes worked out by hand.
SHAPE = (480, 640)
XYXY = torch.tensor([[64.0, 48.0, 192.0, 144.0], [320.0, 0.0, 640.0, 480.0]])
XYWH = torch.tensor([[128.0, 96.0, 128.0, 96.0], [480.0, 240.0, 320.0, 480.0]])
LTWH = torch.tensor([[64.0, 48.0, 128.0, 96.0], [320.0, 0.0, 320.0, 480.0]])
XYXYN = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.0, 1.0, 1.0]])
XYWHN = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.75, 0.5, 0.5, 1.0]])


def test_box_formats_by_hand():
    b = Boxes(XYXY, SHAPE)
    assert torch.allclose(b.xywh, XYWH)
    assert torch.allclose(b.ltwh, LTWH)
    assert torch.allclose(b.xyxyn, XYXYN)
    assert torch.allclose(b.xywhn, XYWHN)


def test_round_trips_on_a_rectangular_picture():
    torch.manual_seed(0)
    shape = (375, 1000)                                 # h, w: far from square
    xy = torch.rand(50, 2) * torch.tensor([1000.0, 375.0])
    wh = torch.rand(50, 2) * 200
    b = Boxes(torch.cat([xy, xy + wh], 1), shape)
    for other in (Boxes.from_xywh(b.xywh, shape), Boxes.from_xyxyn(b.xyxyn, shape), Boxes.from_xywhn(b.xywhn, shape)):
        assert torch.allclose(other.xyxy, b.xyxy, atol=1e-3)
    assert torch.allclose(b.xyxyn[:, [0, 2]] * 1000, b.xyxy[:, [0, 2]], atol=1e-3)   # x by the width
    assert torch.allclose(b.xyxyn[:, [1, 3]] * 375, b.xyxy[:, [1, 3]], atol=1e-3)    # y by the height


def test_boxes_are_in_original_pixels_of_a_rectangular_picture(detector):
    """1000 x 375 squashed to a 160 x 160 input; the box comes back in the picture's pixels, per axis."""
    box = (250, 75, 750, 300)
    (r,) = predict(detector, picture(1000, 375, box), imgsz=160)
    assert r.orig_shape == (375, 1000)
    assert_box(r.boxes.xyxy[0], box, tol=2 * 1000 / 160)
    assert_box(r.boxes.xyxyn[0], (0.25, 0.2, 0.75, 0.8), tol=0.013)
    assert_box(r.boxes.xywh[0], (500, 187.5, 500, 225), tol=2 * 1000 / 160)


def test_rectangular_network_input(detector):
    box = (100, 60, 300, 180)
    (r,) = predict(detector, picture(400, 240, box), imgsz=(96, 160))
    assert detector.calls[-1]["shape"] == (1, 3, 96, 160)
    assert_box(r.boxes.xyxy[0], box, tol=2 * 400 / 160)


def test_coco_class_names_and_category_ids(detector):
    d = ColourDetector(labels={"red": 11, "blue": 79})      # label 11: stop sign (id 13), 79: toothbrush (id 90)
    img = picture(200, 100, (10, 10, 60, 60))
    img[60:90, 120:190] = (0, 0, 255)
    (r,) = predict(d, img, imgsz=128)
    assert r.names == dict(enumerate(COCO_NAMES)) and len(r.names) == 80
    assert sorted(r.class_names) == ["stop sign", "toothbrush"]
    coco = r.to_coco(image_id=397133)
    assert sorted(d["category_id"] for d in coco) == [13, 90]
    assert r.category_ids == COCO_CATEGORY_IDS
    red = next(x for x in coco if x["category_id"] == 13)
    assert red["image_id"] == 397133 and set(red) == {"image_id", "category_id", "bbox", "score"}
    assert_box(red["bbox"], (10, 10, 50, 50), tol=2 * 200 / 128)     # x, y, w, h
    assert red["score"] == pytest.approx(0.9, abs=1e-4)
    assert r.to_coco(1, category_ids=list(range(80)))[0]["category_id"] in (11, 79)


def test_names_from_the_checkpoint_and_default_names():
    img = picture(64, 64, (8, 8, 40, 40))
    own = ColourDetector(labels={"red": 1}, num_classes=2, class_names=["cat", "dog"])
    (r,) = predict(own, img, imgsz=64)
    assert r.names == {0: "cat", 1: "dog"} and r.class_names == ["dog"]
    assert r.category_ids is None and r.to_coco(5)[0]["category_id"] == 1       # the label itself
    anonymous = ColourDetector(labels={"red": 2}, num_classes=3)
    (r,) = predict(anonymous, img, imgsz=64)
    assert r.class_names == ["class2"]
    (r,) = predict(anonymous, img, imgsz=64, class_names=["a", "b", "c"], category_ids=[10, 20, 30])
    assert r.class_names == ["c"] and r.to_coco(1)[0]["category_id"] == 30
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        predict(anonymous, img, class_names=["a", "b"])


def test_plot_draws_the_box_where_it_belongs(detector):
    box = (40, 30, 120, 90)
    img = np.full((150, 200, 3), 0, np.uint8)
    img[box[1]:box[3], box[0]:box[2]] = 255      # white: the detector's class 3
    (r,) = predict(detector, img, imgsz=160)
    plotted = r.plot(labels=False, scores=False, line_width=2)
    assert plotted.shape == img.shape and plotted.dtype == np.uint8
    c = colour(3)
    x1, y1, x2, y2 = (round(v) for v in r.boxes.xyxy[0].tolist())
    assert tuple(plotted[(y1 + y2) // 2, x1]) == c and tuple(plotted[y1, (x1 + x2) // 2]) == c
    assert tuple(plotted[5, 5]) == (0, 0, 0)                 # far from the box: untouched
    assert (r.orig_img == img).all()                          # the original is not drawn on
    labelled = r.plot()
    assert (labelled != plotted).any()                        # the label strip


def test_save(tmp_path, detector):
    (r,) = predict(detector, picture(200, 150, (40, 30, 120, 90)), imgsz=160)
    path = r.save(tmp_path / "out" / "annotated.png")
    assert (np.asarray(Image.open(path)) == r.plot()).all()
    jpg = r.save(tmp_path / "annotated.jpg")
    assert Image.open(jpg).size == (200, 150)


def test_conf_and_repr(detector):
    d = type(detector)(score=0.4)
    img = picture(64, 64, (8, 8, 40, 40))
    assert len(predict(d, img, imgsz=64)[0]) == 0                  # default conf 0.5
    (r,) = predict(d, img, imgsz=64, conf=0.3)
    assert len(r) == 1 and repr(r) == "Result(image: 64x64, 1 person)"
    (everything,) = predict(d, img, imgsz=64, conf=0.0)
    assert len(everything) == 300                                  # max_det: the official top 300
