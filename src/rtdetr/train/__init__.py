"""Training: `train(data=..., model=...)` / `Trainer`, the official recipes, the matcher and the losses,
distillation teachers (`train(..., teacher=...)`, `load_teacher`) and `tune_distill`.

Names load on first use: the command line reads `TrainConfig` without importing the trainer.
"""
from __future__ import annotations

from rtdetr.core.lazy import lazy_names

_NAMES = {"TrainConfig": "rtdetr.train.config", "TrainRecipe": "rtdetr.train.recipes",
          "Trainer": "rtdetr.train.trainer", "TrainResult": "rtdetr.train.trainer", "train": "rtdetr.train.trainer",
          "effective_config": "rtdetr.train.resolve", "ExtraLoss": "rtdetr.train.step",
          "RTDETRCriterion": "rtdetr.train.criterion", "HungarianMatcher": "rtdetr.train.matcher",
          "Teacher": "rtdetr.train.teachers", "load_teacher": "rtdetr.train.teachers",
          "tune_distill": "rtdetr.train.tune_distill"}
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
