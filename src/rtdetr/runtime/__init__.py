"""Running a detector: PyTorch eager, its fused inference copy, and exported graphs on
ONNX Runtime, OpenVINO and TensorRT, all behind one `Backend` interface (see backend.py)."""
from rtdetr.runtime.backend import Backend, TorchBackend, as_backend
from rtdetr.runtime.exported import ExportedModel, OnnxRuntimeModel, OpenVinoModel, load_exported
from rtdetr.runtime.fused import OptimizedRTDETR, inference_copy, optimize_for_inference
from rtdetr.runtime.graph import read_metadata
from rtdetr.runtime.tensorrt import TensorRTModel, build_engine

__all__ = ["Backend", "TorchBackend", "as_backend", "ExportedModel", "OnnxRuntimeModel", "OpenVinoModel", "OptimizedRTDETR", "TensorRTModel", "build_engine",
           "inference_copy", "load_exported", "optimize_for_inference", "read_metadata"]
