"""The text over a detection is "name score", and the score stays on the picture near its right edge."""
from __future__ import annotations

import numpy as np
import torch

from rtdetr.predict.draw import draw_detections, label_origin, label_text
from rtdetr.predict.results import Boxes, Result


def test_label_text_is_name_and_score():
    assert label_text("green_ellipse", 0.873) == "green_ellipse 0.87"
    assert label_text("green_ellipse", 0.873, scores=False) == "green_ellipse"
    assert label_text("green_ellipse", 0.873, labels=False) == "0.87"


def test_a_strip_near_the_right_edge_is_moved_inside():
    assert label_origin((10, 50), (80, 12), 320) == (10, 38)       # room: left edge of the box, above it
    assert label_origin((290, 50), (80, 12), 320) == (239, 38)     # ends at the last column, 319
    assert label_origin((290, 5), (400, 12), 320) == (0, 5)        # wider than the picture; box at the top


def test_the_score_is_drawn_for_a_box_at_the_right_edge():
    """A box at the right edge of a 320x320 picture (as the demo's val_00003): with the strip
    starting at the box, "red_rectangle" filled it to the edge and the score fell off the
    picture, so drawing with and without the score gave the same picture."""
    image = np.full((320, 320, 3), 90, np.uint8)
    boxes = torch.tensor([[252.0, 41.0, 288.0, 98.0]])
    with_score = draw_detections(image, boxes, [0], ["red_rectangle 0.62"])
    without = draw_detections(image, boxes, [0], ["red_rectangle"])
    rows, cols = np.nonzero((with_score != without).any(axis=2))
    assert len(rows) > 0 and rows.max() <= 41           # they differ, in the strip above the box (its last row: 41)
    # The whole text is inside: the strip (the box's colour) reaches back left of the box.
    strip = (with_score[rows.min():42] == (255, 56, 56)).all(axis=2)
    assert strip[:, 319].any() and np.nonzero(strip.any(axis=0))[0].min() < 252
    # Result.plot writes the same text.
    result = Result(boxes=Boxes(boxes, (320, 320)), scores=torch.tensor([0.62]), labels=torch.tensor([0]),
                    names={0: "red_rectangle"}, orig_img=image)
    assert (result.plot() == with_score).all()
