"""Running a detector: PyTorch eager, its fused inference copy, and exported graphs on
ONNX Runtime, OpenVINO and TensorRT, all behind one `Backend` interface (see backend.py).
Names load on first use: a PyTorch model never imports the exported-graph runtimes."""
from __future__ import annotations

from rtdetr.core.lazy import lazy_names

_NAMES = {
    "Backend": "rtdetr.runtime.backend", "TorchBackend": "rtdetr.runtime.backend", "as_backend": "rtdetr.runtime.backend",
    "ExportedModel": "rtdetr.runtime.exported", "OnnxRuntimeModel": "rtdetr.runtime.exported",
    "OpenVinoModel": "rtdetr.runtime.exported", "load_exported": "rtdetr.runtime.exported",
    "OptimizedRTDETR": "rtdetr.runtime.fused", "inference_copy": "rtdetr.runtime.fused",
    "optimize_for_inference": "rtdetr.runtime.fused", "read_metadata": "rtdetr.runtime.graph",
    "TensorRTModel": "rtdetr.runtime.tensorrt", "build_engine": "rtdetr.runtime.tensorrt",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
