"""TensorRT: build an engine from an exported ONNX graph, and run it (CUDA only).

    from rtdetr.export import export_onnx
    from rtdetr.runtime import TensorRTModel, build_engine
    export_onnx(model, "model.onnx")                          # on any machine
    build_engine("model.onnx", "model.engine", fp16=True)    # on the GPU that will run it
    m = TensorRTModel("model.engine")
    dets = m.detect(images, orig_sizes_wh)                    # as OnnxRuntimeModel / OpenVinoModel

Written for the TensorRT 10 Python API (`build_serialized_network`, named I/O tensors,
`execute_async_v3`); the official `tools/export_trt.py` uses `max_workspace_size` and
`build_engine`, which TensorRT 10 removed. An engine is specific to the GPU and TensorRT
version that built it. Without CUDA or the `tensorrt` package, every entry point raises a
one-line error. (Not exercised by the test suite, which runs on CPU-only machines.)

Inputs and outputs live on the GPU as torch tensors: no pycuda or cuda-python needed.
A segmentation graph's `masks` output (mask logits, float32, an Einsum in the graph) comes
back like the others: `detect` gives 'masks' per image as every runtime does (exported.py).
The `rtdetr.*` metadata of the ONNX graph is kept beside the engine, in `<engine>.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rtdetr.runtime.graph import read_metadata
from rtdetr.runtime.exported import ExportedModel


def require_tensorrt():
    """The `tensorrt` module, or a one-line error saying what is missing."""
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)")
    try:
        import tensorrt
    except ImportError:
        raise ImportError("TensorRT is not installed: pip install tensorrt (on a machine with a CUDA GPU)") from None
    return tensorrt


def build_engine(onnx_path: str | Path, engine_path: str | Path | None = None, *, fp16: bool = True,
                 batch: tuple[int, int, int] = (1, 1, 16), workspace_gib: float = 4.0) -> Path:
    """Build and save a TensorRT engine for an exported graph; returns the engine's path.

    fp16:  allow fp16 kernels (TensorRT keeps fp32 where it is more accurate or faster)
    batch: (min, opt, max) batch sizes of the optimisation profile, for graphs with a dynamic
           batch (fixed dimensions are taken as they are); TensorRT tunes for `opt`
    Dynamic H and W graphs are built for the example size stored in the metadata if any.
    """
    trt = require_tensorrt()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    config.add_optimization_profile(_profile(builder, network, batch, read_metadata(onnx_path)))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    _sidecar(engine_path).write_text(json.dumps({**read_metadata(onnx_path), "fp16": fp16}))
    return engine_path


def _profile(builder, network, batch: tuple[int, int, int], meta: dict):
    """min / opt / max shapes of every input: dynamic batch from `batch`, dynamic H, W from metadata or 640."""
    h, w = meta.get("imgsz") or (640, 640)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = []
        for n in batch:
            dims = list(tensor.shape)
            if dims[0] == -1:
                dims[0] = n
            if len(dims) == 4:  # images: any dynamic H, W get the metadata's size
                dims[2] = h if dims[2] == -1 else dims[2]
                dims[3] = w if dims[3] == -1 else dims[3]
            shapes.append(tuple(dims))
        profile.set_shape(tensor.name, *shapes)
    return profile


def _sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


class TensorRTModel(ExportedModel):
    """A serialized TensorRT engine, run on a CUDA device; `detect` and `__call__` as the other runtimes.

    Results come back to the CPU, like the other runtimes'. `.precision` is "fp16" when the
    engine was built allowing it (TensorRT picks per layer), else "fp32".
    """

    runtime = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str | torch.device = "cuda"):
        trt = require_tensorrt()
        engine_path = Path(engine_path)
        self.device = torch.device(device)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: not an engine for this GPU / TensorRT version; build it again")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        dims = {n: [d if d >= 0 else None for d in self.engine.get_tensor_shape(n)] for n in names}
        self._dtypes = {n: torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                        for n in names}
        sidecar = _sidecar(engine_path)
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self.precision = "fp16" if meta.get("fp16", True) else "fp32"
        super().__init__(engine_path, meta, {n: d for n, d in dims.items() if is_input[n]},
                         {n: d for n, d in dims.items() if not is_input[n]})

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stream = torch.cuda.current_stream(self.device)
        keep = []  # the device tensors must outlive the launch
        for name, array in feeds.items():
            t = torch.from_numpy(array).to(self.device, self._dtypes[name]).contiguous()
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
            keep.append(t)
        outputs = {}
        for name in self.output_shapes:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outputs.items()}
