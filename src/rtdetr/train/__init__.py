"""Training: `train(data=..., model=...)` / `Trainer`, the official recipes, the matcher and the losses.

Names load on first use: the command line reads `TrainConfig` without importing the trainer.
"""
from __future__ import annotations

import importlib

_NAMES = {"TrainConfig": "rtdetr.train.config", "TrainRecipe": "rtdetr.train.recipes",
          "Trainer": "rtdetr.train.trainer", "TrainResult": "rtdetr.train.trainer", "train": "rtdetr.train.trainer",
          "effective_config": "rtdetr.train.resolve", "ExtraLoss": "rtdetr.train.step",
          "RTDETRCriterion": "rtdetr.train.criterion", "HungarianMatcher": "rtdetr.train.matcher"}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'rtdetr.train' has no attribute {name!r}")
