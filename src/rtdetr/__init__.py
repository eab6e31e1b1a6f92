"""rtdetr: real-time end-to-end transformer object detection (RT-DETR v1 and v2).

    import rtdetr
    det = rtdetr.load_model("rtdetrv2_r18vd")      # a Detector: predict, val, train, export, benchmark, save

Names load on first use, so that `import rtdetr` (and the `rtdetr` command's start) costs
almost nothing until a model is needed.
"""
from __future__ import annotations

from rtdetr.core.lazy import lazy_names

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {
    "Detector": "rtdetr.api", "load_model": "rtdetr.api", "save_checkpoint": "rtdetr.api", "val": "rtdetr.api",
    "BackboneConfig": "rtdetr.models.config", "DecoderConfig": "rtdetr.models.config",
    "EncoderConfig": "rtdetr.models.config", "ModelConfig": "rtdetr.models.config",
    "create_model": "rtdetr.models.zoo", "list_models": "rtdetr.models.zoo",
    "RTDETR": "rtdetr.models.nn.detector", "build_model": "rtdetr.models.nn.detector",
    "postprocess": "rtdetr.models.postprocess",
    "CheckpointError": "rtdetr.core.errors", "ImageReadError": "rtdetr.core.errors",
    "optimize_for_inference": "rtdetr.runtime.fused",
    "Boxes": "rtdetr.predict.results", "Result": "rtdetr.predict.results", "Predictor": "rtdetr.predict.predictor",
    "PredictWarning": "rtdetr.predict.predictor", "SourceError": "rtdetr.predict.sources",
}
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
