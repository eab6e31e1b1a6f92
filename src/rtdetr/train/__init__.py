"""Training pieces: the Hungarian matcher and the RT-DETRv2 loss."""
from .criterion import RTDETRCriterion
from .matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "RTDETRCriterion"]
