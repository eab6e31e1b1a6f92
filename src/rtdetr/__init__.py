"""rtdetr: real-time end-to-end transformer object detection (RT-DETR v1 and v2)."""
from .api import load_model, save_checkpoint
from .checkpoint import CheckpointError
from .deploy.fuse import optimize_for_inference
from .config import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig
from .nn.detector import RTDETR, build_model
from .nn.postprocess import postprocess
from .predict import Boxes, ImageReadError, Predictor, PredictWarning, Result, SourceError
from .zoo import create_model, list_models

__version__ = "0.1.0"
__all__ = [
    "RTDETR", "BackboneConfig", "Boxes", "ImageReadError", "Predictor", "PredictWarning", "Result", "SourceError", "CheckpointError", "DecoderConfig", "EncoderConfig", "ModelConfig",
    "build_model", "create_model", "list_models", "load_model", "optimize_for_inference", "postprocess", "save_checkpoint",
]
