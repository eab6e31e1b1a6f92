"""An evaluation with no ground-truth objects reports that there was nothing to score, not -1s."""
from __future__ import annotations

import torch

from rtdetr.eval.coco_eval import CocoEvaluator


def ground_truth(annotations):
    return {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
            "annotations": annotations, "categories": [{"id": 1, "name": "ellipse"}]}


def evaluate(gt):
    ev = CocoEvaluator(gt)
    det = {"labels": torch.tensor([0]), "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "scores": torch.tensor([0.9])}
    ev.update([1, 2], [det, det])
    return ev.compute()


def test_nothing_to_score_is_said():
    result = evaluate(ground_truth([]))
    assert result.ap == -1 and result.empty   # COCO's "undefined"
    assert result.summary() == "no objects in the 2 evaluated images to score (AP and AR are undefined)"
    table = result.table().splitlines()
    assert table[-1] == "no objects in the 2 evaluated images to score"
    assert "-1" not in result.table()


def test_a_scored_result_is_not_empty():
    result = evaluate(ground_truth([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40]}]))
    assert not result.empty and result.ap > 0
    assert "to score" not in result.summary() + result.table()
    assert len(result.summary().splitlines()) == 12
