"""The inference paths a benchmark can measure, what each needs, and the predictor that runs each."""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rtdetr.predict.predictor import Predictor
from rtdetr.runtime.precision import openvino_precision_problem, torch_bf16_problem


PATHS = ("torch", "torch-fused", "torch-fused-bf16", "onnxruntime", "openvino", "openvino-bf16",
         "onnxruntime-int8", "openvino-int8", "openvino-int8-bf16")


# The Python packages each path needs at run time (onnx too for exporting the graph).
_NEEDS = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"),
          "onnxruntime-int8": ("onnx", "onnxruntime"), "openvino-int8": ("onnx", "openvino")}


_NEEDS["openvino-bf16"] = _NEEDS["openvino-int8-bf16"] = _NEEDS["openvino"]


def check_paths(paths: Sequence[str]) -> list[str]:
    """The paths, in order and without repeats; one-line error for a name that is not a path."""
    for p in paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r}; valid paths: {', '.join(PATHS)}")
    return list(dict.fromkeys(paths))


def missing(path: str) -> str | None:
    """Why `path` cannot run here (a package, the int8 quantizer or an instruction set missing),
    or None if it can."""
    for module in _NEEDS.get(path, ()):
        if importlib.util.find_spec(module) is None:
            return f"needs the {module} package (pip install {module})"
    if "-int8" in path and int8_quantizer() is None:
        return "needs rtdetr.export.quantize.quantize_int8, which this installation does not have"
    if path == "torch-fused-bf16":
        return torch_bf16_problem()
    if path.startswith("openvino") and path.endswith("-bf16"):
        return openvino_precision_problem("bf16")
    return None


def available_paths() -> list[str]:
    """Every path that can run here."""
    return [p for p in PATHS if missing(p) is None]


def int8_quantizer() -> Callable | None:
    """`rtdetr.export.quantize.quantize_int8` if this installation has it (imported only when needed)."""
    try:
        module = importlib.import_module("rtdetr.export.quantize")
    except ImportError:
        return None
    return getattr(module, "quantize_int8", None)


@dataclass
class Exports:
    """The exported graphs the runtime paths share, made once (or given) in `workdir`.

    postprocess: graphs end in the post-processing, as `rtdetr export` writes them (default),
    or give the raw outputs (for model-only comparisons).
    """

    workdir: Path
    model: torch.nn.Module
    imgsz: tuple[int, int]
    calibration: object  # what `quantize_int8` takes: a folder, files or arrays
    onnx: Path | None = None
    onnx_int8: Path | None = None
    postprocess: bool = True

    def fp32(self) -> Path:
        if self.onnx is None:
            from rtdetr.export.onnx import export_onnx
            h, w = self.imgsz
            name = f"model_{h}x{w}{'' if self.postprocess else '_raw'}.onnx"
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
                warnings.simplefilter("ignore")
                self.onnx = export_onnx(self.model, self.workdir / name, imgsz=self.imgsz,
                                        postprocess=self.postprocess)
        return self.onnx

    def int8(self) -> Path:
        if self.onnx_int8 is None:
            out = self.workdir / f"{self.fp32().stem}_int8.onnx"
            self.onnx_int8 = Path(int8_quantizer()(self.fp32(), out, calibration=self.calibration, imgsz=self.imgsz))
        return self.onnx_int8


def build_predictor(path: str, model, exports: Exports, imgsz: tuple[int, int], threads: int,
                    conf: float) -> tuple[Predictor, str]:
    """The `Predictor` for one path, and a line saying what it runs."""
    from rtdetr.runtime.fused import optimize_for_inference
    from rtdetr.runtime.exported import OnnxRuntimeModel, OpenVinoModel

    kw = dict(conf=conf, imgsz=imgsz)
    if path == "torch":
        return Predictor(model, optimize=False, **kw), "PyTorch eager, float32"
    if path == "torch-fused":
        return Predictor(model, optimize=True, **kw), "PyTorch, optimize_for_inference float32 (predictor default)"
    if path == "torch-fused-bf16":
        fast = optimize_for_inference(model, imgsz, dtype=torch.bfloat16)
        return Predictor(fast, **kw), "PyTorch, optimize_for_inference, bfloat16 backbone + encoder"
    graph = exports.int8() if "-int8" in path else exports.fp32()
    if path.startswith("onnxruntime"):
        runtime = OnnxRuntimeModel(graph, threads=threads)
    else:
        precision = "bf16" if path.endswith("-bf16") else "fp32"
        with warnings.catch_warnings():  # a precision the CPU lacks: `detail` says what ran instead
            warnings.simplefilter("ignore", RuntimeWarning)
            runtime = OpenVinoModel(graph, precision=precision, threads=threads)
    return Predictor(runtime, **kw), describe_runtime(runtime)


def describe_runtime(runtime) -> str:
    """What an exported model runs: runtime, precision actually used, where post-processing happens."""
    precision = runtime.precision
    if precision == "int8" and getattr(runtime, "float_precision", None):
        precision += f" (the rest {runtime.float_precision})"
    where = "post-processing in the graph" if runtime.postprocessed else "raw outputs"
    return f"{runtime.runtime} {precision}, {where}, {runtime.path.name}"


def model_call(predictor: Predictor) -> Callable[[torch.Tensor], object]:
    """What the predictor runs as its `inference` stage, alone: x [N, 3, H, W] -> outputs (call it
    under torch.inference_mode). For model-only timing, e.g. against other implementations."""
    model, layers = predictor.model, predictor.decoder_layers
    if getattr(model, "postprocessed", False):
        return lambda x: model.detect(x, torch.tensor([[x.shape[3], x.shape[2]]] * len(x)), num_top=predictor.max_det)
    if getattr(predictor, "optimize", False):
        from rtdetr.runtime.fused import inference_copy
        return lambda x: inference_copy(model, predictor.imgsz, layers)(x)
    return lambda x: model(x, num_decoder_layers=layers)
