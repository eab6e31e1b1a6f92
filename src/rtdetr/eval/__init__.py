"""Evaluation: COCO box metrics (AP50:95 and friends, per class) of detections."""
from .coco_eval import CocoEvaluator
from .result import ClassAP, EvalResult

__all__ = ["ClassAP", "CocoEvaluator", "EvalResult"]
