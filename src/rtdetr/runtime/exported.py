"""Running exported graphs with ONNX Runtime or OpenVINO, behind the detector's own interface.

    from rtdetr.runtime import OnnxRuntimeModel, OpenVinoModel, load_exported
    m = OnnxRuntimeModel("model.onnx", threads=2)
    m = OpenVinoModel("model.onnx", precision="fp32")        # or an OpenVINO .xml
    dets = m.detect(images, orig_sizes_wh)                   # as rtdetr.postprocess: a list, one dict per image
                                                             # (+ 'masks' logits [k, H/4, W/4], segmentation graphs)
    out = m(images)                                          # raw outputs, if the graph has them
    m.precision                                              # what actually ran ("fp32", "bf16", ...)

`images` is [N, 3, H, W] float RGB in [0, 1] (a torch tensor or a numpy array), `orig_sizes_wh`
[N, 2] (width, height). Results are torch tensors on the CPU, so `rtdetr.postprocess`, the
predictor and `Result` take them as they take the PyTorch model's.

Either kind of graph works (see `rtdetr.export.onnx`): one that ends in the post-processing
(`labels`, `boxes`, `scores`, e.g. the official `export_onnx.py` graphs too) or a raw one
(`pred_logits`, `pred_boxes`), which `detect` post-processes with `rtdetr.postprocess`.
A graph with a fixed batch size is run in chunks of that size.

A segmentation graph (outputs `masks`, or `mask_features` and `mask_queries` among the raw ones)
gives each image's dict 'masks' [k, H/4, W/4] float32 mask logits at 1/4 of the network input,
as `TorchBackend` does; `rtdetr.models.postprocess.paste_masks` brings them to the picture.

The TensorRT runner is in `tensorrt.py` (it needs CUDA).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from rtdetr.models.postprocess import postprocess
from rtdetr.core.errors import require
from rtdetr.runtime.graph import (DETECTION_OUTPUTS, MASK_OUTPUT, MASK_RAW_OUTPUTS, RAW_OUTPUTS, decode_metadata,
                                  is_segmentation)
from rtdetr.runtime.precision import openvino_precision_problem, refuse_if

PRECISIONS = ("fp32", "bf16", "fp16")


class ExportedModel:
    """What every runtime shares: the graph's metadata, input checks, batching and outputs.

    Subclasses set `runtime`, `precision` and `_infer(feeds) -> {output name: array}`.
    The attributes the predictor reads are those of `RTDETR`: num_classes, class_names, category_ids.
    """

    runtime = "?"
    precision = "fp32"

    def __init__(self, path: str | Path, meta: dict, inputs: dict[str, list], outputs: dict[str, list]):
        """inputs / outputs: name -> shape, with None for dynamic dimensions."""
        self.path = Path(path)
        self.meta = meta
        self.input_shapes, self.output_shapes = inputs, outputs
        names = set(outputs)
        self.postprocessed = names >= set(DETECTION_OUTPUTS)  # detections come out of the graph
        self.has_raw = names >= set(RAW_OUTPUTS)              # raw outputs come out (too)
        self.segmentation = is_segmentation(names)           # masks come out (or their factors)
        self.raw_names = [*RAW_OUTPUTS, *(MASK_RAW_OUTPUTS if names >= set(MASK_RAW_OUTPUTS) else ())]
        if not (self.postprocessed or self.has_raw):
            raise ValueError(f"{path}: outputs {sorted(names)} include neither {DETECTION_OUTPUTS} nor {RAW_OUTPUTS}")
        image_shape = inputs["images"]
        self.batch_size: int | None = image_shape[0]  # None: any
        self.imgsz: tuple[int, int] | None = (
            tuple(image_shape[2:]) if None not in image_shape[2:] else None)  # (h, w), None: any
        self.num_top: int | None = (outputs["scores"][1] or meta.get("num_top")) if self.postprocessed else None
        # An official graph carries no metadata: it was trained on COCO's 80 classes.
        raw_classes = outputs["pred_logits"][-1] if self.has_raw else None
        self.num_classes: int = meta.get("num_classes") or raw_classes or 80
        self.class_names: list[str] | None = meta.get("class_names")
        self.category_ids: list[int] | None = meta.get("category_ids")

    # The detector's interface, so the predictor can hold a runtime model where it holds an RTDETR.
    def to(self, device) -> ExportedModel:
        return self

    def eval(self) -> ExportedModel:
        return self

    def __call__(self, images, num_decoder_layers: int | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs {'pred_logits' [N, Q, C], 'pred_boxes' [N, Q, 4]} (raw graphs, or keep_raw=True);
        a segmentation graph's also {'mask_features' [N, D, H/4, W/4], 'mask_queries' [N, Q, D]}."""
        if not self.has_raw:
            raise TypeError(f"{self.path.name} ends in post-processing (labels, boxes, scores): "
                            f"call .detect(images, orig_sizes_wh)")
        self._check_decoder_layers(num_decoder_layers)
        if self.postprocessed:  # the detections need sizes; any will do for the raw outputs
            out = self.run(images, np.ones((len(images), 2), np.int64))
        else:
            out = self.run(images)
        return {k: torch.from_numpy(out[k]) for k in self.raw_names}

    def detect(self, images, orig_sizes_wh, num_top: int | None = None,
               category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """Detections as `rtdetr.postprocess` gives them: per image {'labels' [k], 'boxes' [k, 4] xyxy
        pixels of orig_sizes_wh, 'scores' [k]}, best first; k = num_top (default: the graph's, or 300).
        A segmentation graph's also hold 'masks' [k, H/4, W/4] float32 mask logits."""
        sizes = torch.as_tensor(np.asarray(orig_sizes_wh), dtype=torch.int64).reshape(-1, 2)
        if not self.postprocessed:
            out = self(images)
            return postprocess(out, sizes, num_top=num_top or 300, category_ids=category_ids)
        k = self.num_top if num_top is None else num_top
        if self.num_top is not None and k > self.num_top:
            raise ValueError(f"{self.path.name} keeps {self.num_top} detections per image; asked for {k}")
        out = self.run(images, sizes.numpy())
        labels = torch.from_numpy(out["labels"][:, :k])
        if category_ids is not None:
            labels = torch.as_tensor(category_ids)[labels]
        boxes, scores = torch.from_numpy(out["boxes"][:, :k]), torch.from_numpy(out["scores"][:, :k])
        dets = [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]
        if MASK_OUTPUT in out:
            for det, m in zip(dets, torch.from_numpy(out[MASK_OUTPUT][:, :k]).float()):
                det["masks"] = m
        return dets

    def run(self, images, orig_sizes_wh=None) -> dict[str, np.ndarray]:
        """Every output of the graph, by name, for a whole batch (chunked for fixed-batch graphs)."""
        images = _as_array(images, np.float32)
        self._check_images(images)
        feeds = {"images": images}
        if "orig_target_sizes" in self.input_shapes:
            if orig_sizes_wh is None:
                raise ValueError("this graph needs orig_sizes_wh [N, 2] (width, height)")
            feeds["orig_target_sizes"] = _as_array(orig_sizes_wh, np.int64).reshape(-1, 2)
        if self.batch_size is None or self.batch_size == len(images):
            return self._infer(feeds)
        return _concat([self._infer(chunk) for chunk in _chunks(feeds, self.batch_size)], len(images))

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _check_images(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {list(images.shape)}")
        if self.imgsz is not None and tuple(images.shape[2:]) != self.imgsz:
            h, w = self.imgsz
            raise ValueError(f"{self.path.name} was exported for {h}x{w} inputs, got {images.shape[2]}x"
                             f"{images.shape[3]} (resize to it, or export with dynamic_hw=True)")

    def _check_decoder_layers(self, n: int | None) -> None:
        baked = self.meta.get("decoder_layers")
        if n is not None and n != baked:
            raise ValueError(f"{self.path.name} runs {baked or 'a fixed number of'} decoder layers; "
                             f"export again with decoder_layers={n}")

    def __repr__(self) -> str:
        kind = " and ".join(k for k, has in (("detections", self.postprocessed), ("raw outputs", self.has_raw)) if has)
        kind += " with masks" if self.segmentation else ""
        size = "x".join(map(str, self.imgsz)) if self.imgsz else "any size"
        return f"{type(self).__name__}({self.path.name}: {kind}, {size}, {self.runtime} {self.precision})"


class OnnxRuntimeModel(ExportedModel):
    """An ONNX graph run by ONNX Runtime (CPU by default).

    threads:   intra-op threads (None: ONNX Runtime's default, one per core)
    precision: "fp32" only: ONNX Runtime runs the graph in the types it was exported with (for
               bf16 or fp16 on a CPU, use `OpenVinoModel`); `.precision` reports "int8" for a
               quantised (QDQ) graph from `quantize_int8`
    providers: ONNX Runtime execution providers (default: CPU)
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32",
                 providers: list[str] | None = None):
        if precision != "fp32":
            raise ValueError(f"OnnxRuntimeModel runs fp32 graphs only, got precision={precision!r} "
                             f"(OpenVinoModel offers bf16 and fp16)")
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.threads = threads
        meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        if _has_qdq(path):  # an int8 graph (`quantize_int8`): its quantised operators run int8 kernels
            self.precision = "int8"
        inputs = {i.name: _static_dims(i.shape) for i in self.session.get_inputs()}
        outputs = {o.name: _static_dims(o.shape) for o in self.session.get_outputs()}
        super().__init__(path, meta, inputs, outputs)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.output_shapes)
        return dict(zip(names, self.session.run(names, feeds)))


class OpenVinoModel(ExportedModel):
    """An ONNX graph or OpenVINO IR (.xml) run by OpenVINO.

    precision: "fp32", "bf16" or "fp16", set as the CPU's INFERENCE_PRECISION_HINT. OpenVINO's
               own default on CPUs with bf16 support is bf16, silently; here the choice is
               explicit. A precision OpenVINO's CPU plugin does not offer here (bf16 without AVX512_BF16
               / AMX, fp16 without AVX512-FP16 / AMX-FP16) is refused (`UnsupportedOnThisCPU`,
               one line) instead of silently running fp32; `.precision` tells what the compiled
               model runs (on other devices a fallback warns).
    threads:   inference threads (None: OpenVINO's default, one per physical core)
    device:    OpenVINO device ("CPU", "GPU", ...)
    Compiled for latency (one request at a time), the predictor's way of calling it.
    """

    runtime = "openvino"

    def __init__(self, path_or_onnx: str | Path, precision: str = "fp32", threads: int | None = None,
                 device: str = "CPU"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ov = require("openvino")
        import openvino.properties as props
        import openvino.properties.hint as hints

        if device == "CPU":
            refuse_if(openvino_precision_problem(precision, device))
        path = Path(path_or_onnx)
        core = ov.Core()
        model = core.read_model(str(path))
        config = {hints.inference_precision: _OV_TYPES[precision],
                  hints.performance_mode: hints.PerformanceMode.LATENCY}
        if threads is not None:
            config[props.inference_num_threads] = threads
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.requested_precision, self.threads, self.device = precision, threads, device
        ran = self.compiled.get_property(hints.inference_precision).get_type_name()
        self.precision = _OV_NAMES.get(ran, ran)
        if self.precision != precision:
            warnings.warn(f"OpenVINO on {device} runs {self.precision}, not the requested {precision} "
                          f"(not supported there)", RuntimeWarning, stacklevel=2)
        # An int8 graph (QDQ pairs read as FakeQuantize): its quantised operators run int8, the
        # rest in `float_precision`.
        self.float_precision = self.precision
        if any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()):
            self.precision = "int8"
        inputs = {p.get_any_name(): _ov_dims(p.get_partial_shape()) for p in self.compiled.inputs}
        outputs = {p.get_any_name(): _ov_dims(p.get_partial_shape()) for p in self.compiled.outputs}
        super().__init__(path, _ov_metadata(model), inputs, outputs)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(feeds)  # copies the outputs (share_outputs=False)
        return {port.get_any_name(): result[port] for port in self.compiled.outputs}


_OV_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_OV_NAMES = {v: k for k, v in _OV_TYPES.items()}



def load_exported(path: str | Path, runtime: str | None = None, **options) -> ExportedModel:
    """A runtime model for an exported file: `.onnx` (ONNX Runtime, or runtime="openvino"),
    `.xml` (OpenVINO), `.engine` / `.plan` (TensorRT). `options` go to the runtime's class."""
    path = Path(path)
    suffix = path.suffix.lower()
    if runtime is None:
        runtime = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}.get(suffix)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(path, **options)
    if runtime == "openvino":
        return OpenVinoModel(path, **options)
    if runtime == "tensorrt":
        from rtdetr.runtime.tensorrt import TensorRTModel
        return TensorRTModel(path, **options)
    raise ValueError(f"{path}: no runtime for {suffix!r} files (runtime= 'onnxruntime', 'openvino' or 'tensorrt')")


def _has_qdq(path: str | Path) -> bool:
    """Whether an ONNX graph holds QuantizeLinear nodes (a QDQ int8 graph)."""
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "QuantizeLinear" for node in graph.node)


def _as_array(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _static_dims(shape) -> list[int | None]:
    """ONNX Runtime's shape (ints, or strings / None for named dynamic dims) -> ints or None."""
    return [d if isinstance(d, int) else None for d in shape]


def _ov_dims(shape) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in shape]


def _ov_metadata(model) -> dict:
    """The `rtdetr.*` metadata, which OpenVINO's ONNX reader puts in the runtime info's "framework"."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    return decode_metadata({k: v.astype(str) for k, v in info["framework"].items()})


def _chunks(feeds: dict[str, np.ndarray], size: int):
    """Split feeds along the batch into chunks of exactly `size` (the last one padded by repetition)."""
    n = len(feeds["images"])
    for start in range(0, n, size):
        idx = np.minimum(np.arange(start, start + size), n - 1)
        yield {k: v[idx] for k, v in feeds.items()}


def _concat(parts: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
