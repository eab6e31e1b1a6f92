"""`Result.to_supervision()`: the fields against the stand-in detector's known boxes, and a round
trip through supervision's own `BoxAnnotator` against `sv.Detections` built by hand from the truth."""
from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest
import torch

from rtdetr.predict import Masks, predict
from rtdetr.predict.results import Boxes, Result
from tests.predict.conftest import BLUE, GREEN, RED

with warnings.catch_warnings():
    warnings.simplefilter("ignore")      # supervision warns when it draws without OpenCV
    sv = pytest.importorskip("supervision")

W, H = 320, 256
# (colour, label, name, box x1 y1 x2 y2): the network input is the picture's own size, so the
# detector's boxes are these exactly (query q = the bounding box of colour q's pixels).
TRUTH = [(RED, 0, "person", (16, 24, 112, 120)), (GREEN, 1, "bicycle", (150, 40, 230, 200)),
         (BLUE, 2, "car", (250, 180, 310, 250))]


def scene() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for colour, _, _, (x1, y1, x2, y2) in TRUTH:
        img[y1:y2, x1:x2] = colour
    return img


@pytest.fixture
def result(detector):
    (r,) = predict(detector, scene(), imgsz=(H, W), conf=0.5)
    return r


def by_hand() -> sv.Detections:
    return sv.Detections(xyxy=np.array([t[3] for t in TRUTH], np.float32), confidence=np.full(3, 0.9, np.float32),
                         class_id=np.array([t[1] for t in TRUTH]),
                         data={"class_name": np.array([t[2] for t in TRUTH])})


def test_fields_are_the_known_boxes(result):
    d = result.to_supervision()
    assert isinstance(d, sv.Detections) and len(d) == 3
    order = np.argsort(d.class_id)                      # the three score alike (0.9): compare by label
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (3, 4)
    np.testing.assert_allclose(d.xyxy[order], np.array([t[3] for t in TRUTH], np.float32), atol=1e-3)
    np.testing.assert_allclose(d.confidence, 0.9, atol=1e-5)  # the stand-in's score, through a sigmoid
    assert d.class_id[order].tolist() == [0, 1, 2]
    assert d["class_name"][order].tolist() == ["person", "bicycle", "car"]   # COCO's names of an 80-class model
    assert d.mask is None and d.tracker_id is None


def test_box_annotator_draws_the_same_pixels_as_the_truth(result):
    """supervision's own annotator on our Detections and on hand-built ones: identical pictures."""
    ours, truth = result.to_supervision(), by_hand()
    order = np.argsort(ours.class_id)
    annotator = sv.BoxAnnotator(thickness=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = annotator.annotate(scene(), ours[order])
        b = annotator.annotate(scene(), truth)
    assert not np.array_equal(a, scene())                # something was drawn
    np.testing.assert_array_equal(a, b)


def test_masks_and_track_ids_carried():
    masks = torch.zeros(2, 40, 60, dtype=torch.bool)
    masks[0, 5:15, 10:30] = True
    masks[1, 20:40, 0:60] = True
    r = Result(boxes=Boxes(torch.tensor([[10.0, 5, 30, 15], [0, 20, 60, 40]]), (40, 60)),
               scores=torch.tensor([0.8, 0.7]), labels=torch.tensor([4, 1]), names={1: "a", 4: "b"},
               orig_img=np.zeros((40, 60, 3), np.uint8), masks=Masks(masks))
    r.track_ids = torch.tensor([7, 3])                   # what tracking adds to a Result
    d = r.to_supervision()
    assert d.mask.dtype == np.bool_ and d.mask.shape == (2, 40, 60)
    np.testing.assert_array_equal(d.mask, masks.numpy())
    assert d.tracker_id.tolist() == [7, 3] and d.class_id.tolist() == [4, 1]
    assert d["class_name"].tolist() == ["b", "a"]


def test_empty_result():
    r = Result(boxes=Boxes(torch.zeros(0, 4), (10, 10)), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long),
               names={0: "a"}, orig_img=np.zeros((10, 10, 3), np.uint8))
    d = r.to_supervision()
    assert len(d) == 0 and d.xyxy.shape == (0, 4) and d["class_name"].shape == (0,)


def test_without_supervision_says_how_to_get_it(result, monkeypatch):
    real_import = builtins.__import__

    def no_supervision(name, *args, **kwargs):
        if name == "supervision" or name.startswith("supervision."):
            raise ImportError("No module named 'supervision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_supervision)
    with pytest.raises(ImportError) as e:
        result.to_supervision()
    assert str(e.value) == "to_supervision needs supervision: pip install 'rtdetr[supervision]'"
