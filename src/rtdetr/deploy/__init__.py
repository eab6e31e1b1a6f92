"""Deployment: inference-only, fixed-size copies of a detector (`optimize_for_inference`)."""
from .fold import fold_conv_norms, fold_norm, fuse_repvgg
from .fuse import OptimizedRTDETR, optimize_for_inference

__all__ = ["OptimizedRTDETR", "fold_conv_norms", "fold_norm", "fuse_repvgg", "optimize_for_inference"]
