"""Evaluation: COCO box and mask metrics (AP50:95 and friends, per class) of detections."""
from rtdetr.eval.coco_eval import CocoEvaluator
from rtdetr.eval.result import ClassAP, EvalResult

__all__ = ["ClassAP", "CocoEvaluator", "EvalResult"]
