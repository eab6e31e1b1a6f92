"""Deployment: inference-only, fixed-size copies of a detector (`optimize_for_inference`)."""
from .fold import fold_conv_norms, fold_norm, fuse_repvgg
from .fuse import OptimizedRTDETR, optimize_for_inference

__all__ = ["OptimizedRTDETR", "fold_conv_norms", "fold_norm", "fuse_repvgg", "optimize_for_inference"]

# ONNX export and the runtimes that run exported graphs (onnx, onnxruntime, openvino are
# optional: they are imported only when used).
from .onnx_export import export_onnx, op_types, postprocess_batched, read_metadata
from .runtimes import ExportedModel, OnnxRuntimeModel, OpenVinoModel, load_exported, save_openvino
from .quantize import quantize_int8
from .tensorrt import TensorRTModel, build_engine

__all__ += ["ExportedModel", "OnnxRuntimeModel", "OpenVinoModel", "TensorRTModel", "build_engine", "export_onnx",
            "load_exported", "op_types", "postprocess_batched", "quantize_int8", "read_metadata", "save_openvino"]
