"""`quantize_int8`: INT8 post-training quantisation of an exported ONNX graph (QDQ format).

    from rtdetr.export import export_onnx
    from rtdetr.export.quantize import quantize_int8
    fp32 = export_onnx(model, "model.onnx", imgsz=640)
    int8 = quantize_int8(fp32, calibration="data/train")      # -> model.int8.onnx
    rtdetr.load_model(int8)                                    # ONNX Runtime
    rtdetr.runtime.OpenVinoModel(int8)                          # OpenVINO (int8 kernels)

The result is the same graph with QuantizeLinear / DequantizeLinear pairs around the chosen
operators (static ranges from calibration images, per-channel symmetric 7-bit int8 weights, uint8
activations): ONNX Runtime runs them with its int8 kernels, OpenVINO turns each pair into
a FakeQuantize and runs int8 convolutions. The `rtdetr.*` metadata (class names, size ...)
is kept, plus `rtdetr.quantization` (what was quantised, how it was calibrated).

What is quantised (`scope`), and why (benchmarks/int8.py, two runs: rtdetrv2_r18vd 640x640,
2 threads, speed-ups over ONNX Runtime fp32; mean score change on the trained demo model):
  "conv"   every Conv: the backbone, the encoder's CNN part and the input projections
           (default). They hold nearly all the arithmetic: ONNX Runtime 1.70-1.73x, OpenVINO
           1.75-1.86x (2.1-2.2x with bf16 for the float parts); scores move by 0.012-0.014.
  "trunk"  "conv" plus the MatMul / Gemm of the encoder's attention layer: a wash (ONNX Runtime
           ~3 % slower, OpenVINO ~5 % faster; the layer runs on the 20x20 top map only), no
           more accurate, and it needs the TorchScript exporter's node names.
  "all"    every Conv, MatMul and Gemm, the decoder's included: ONNX Runtime 1.82-1.86x but
           twice the score change (0.029), and OpenVINO (2026.4) fails to compile it.
Everything else stays float: the decoder's query selection, sampling offsets, attention
weights, box and score heads (small errors there move boxes or reorder scores), GridSample,
Sigmoid, TopK and the post-processing. (In QDQ form a quantised tensor is dequantised for
all its readers, so the float operators next to a Conv, e.g. residual adds and the decoder's
flattening of the input projections, read the rounded values too.)

Calibration: min / max ranges. Percentile ranges measured the same; entropy ranges clip more
and double the score error (0.03); 8, 32 or 128 images made no difference on the demo model,
so 32 is a margin, not a need. `quant_pre_process` (ONNX Runtime's graph preparation) is not
used: its symbolic shape inference fails on these graphs, and without it nothing got faster
(the exported graph is already constant-folded).

Which runtime (same benchmark): OpenVINO runs the int8 graph fastest at int8's accuracy
(1.75-1.86x, scores move by 0.012); ONNX Runtime is close (1.70-1.73x, 0.014). On a CPU with
native bf16 (AVX512-BF16, as measured) OpenVINO's bf16 alone is about as fast (1.7-1.9x) but
moves scores twice as much (0.023; AP50:95 -0.008), and the int8 graph with bf16 float parts
(`OpenVinoModel(path, precision="bf16")`) is the fastest (2.1-2.2x) at bf16's accuracy.

Every CPU: one file, quantised once, runs on CPUs with and without VNNI, so its recipe must be
exact on both. x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3, Intel before Ice Lake / Alder
Lake) multiply uint8 activations by int8 weights with `vpmaddubsw`, which adds each pair of
products into an int16 that saturates at 32767: with 8-bit weights one pair reaches 2 x 255 x
127 = 64770. ONNX Runtime's kernels do that, and oneDNN's (OpenVINO) for uint8 inputs too.
Weights in the 7-bit range [-64, 64] (`reduce_range=True`, the default) bound a pair at 2 x 255
x 64 = 32640: no saturation, whatever the input. Measured by benchmarks/int8_cpus.py on an
AVX-512 VNNI Xeon and, for the other kind, under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI;
ONNX Runtime picks its AVX2 kernels from the CPUID qemu reports), ONNX Runtime:
  trunk error of the tests' recipe-weight r18 (weights that fill their range), 320x320:
    8-bit weights 1.9 % with VNNI, 7.2 % without (what failed on an AMD Zen 3);
    7-bit weights 2.3 % with VNNI and 2.3 % without (the same outputs, bit for bit);
  AP50:95 of the trained demo model, first 16 val images: fp32 0.6262; 8-bit 0.6296 / 0.6286
    (with / without VNNI); 7-bit 0.6239 / 0.6239.
  The whole val split (60 images), with VNNI: PyTorch and fp32 0.6522; 7-bit ONNX Runtime 0.6511,
    OpenVINO 0.6515; 8-bit 0.6534, 0.6514: the seventh bit is worth ~0.001 AP there.
int8 activations (`activations="int8"`, which ONNX Runtime's kernels multiply without
saturating) were rejected: OpenVINO runs them badly (AP 0.27 against 0.63 on the tests' tiny
model) and oneDNN shifts them to uint8 on CPUs without VNNI anyway.
Latency with VNNI (rtdetrv2_r18vd 640x640, batch 1, 2 threads, interleaved): ONNX Runtime fp32
240 ms, int8 179 ms with 8-bit weights and 194 ms with 7-bit (1.34x and 1.24x over fp32);
OpenVINO int8 122 and 120 ms. `reduce_range=False` gives the 8-bit file, for CPUs with VNNI
(or ARM's dot products) only.

Calibration feeds images pre-processed exactly as the predictor does (`preprocess`: PIL
bilinear resize to the graph's size, / 255), one at a time, with their (w, h) as
`orig_target_sizes` when the graph takes it.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtdetr.core.images import IMAGE_SUFFIXES, read_image
from rtdetr.core.images import preprocess
from rtdetr.core.sizes import check_imgsz
from rtdetr.core.errors import require

METHODS = ("minmax", "percentile", "entropy")
SCOPES = ("conv", "trunk", "all")
TRUNK_PREFIXES = ("/model/backbone/", "/model/encoder/")  # node names of the TorchScript exporter
CHUNK = 4  # calibration images run per collection step (bounds the memory of intermediate outputs)


def quantize_int8(onnx_path: str | Path, out_path: str | Path | None = None, calibration=None, *,
                  imgsz: int | tuple[int, int] | None = None, max_images: int = 32, method: str = "minmax",
                  scope: str = "conv", reduce_range: bool = True, activations: str = "uint8",
                  exif: bool = True) -> Path:
    """Write an INT8 (QDQ) copy of the exported graph `onnx_path`; return its path.

    out_path:    default: next to the input, `NAME.int8.onnx`
    calibration: a folder of images (a data set folder: its train split), a list of image
                 paths, or a list of [H, W, 3] uint8 RGB arrays; at most `max_images` are used,
                 spread evenly over the sorted list
    imgsz:       (h, w) to calibrate at (default: the graph's fixed size; needed for graphs
                 exported with dynamic_hw=True)
    method:      activation ranges: "minmax" (default), "percentile" or "entropy"
    scope:       which operators are quantised: "conv" (default), "trunk" or "all" (see module doc)
    reduce_range: weights in the 7-bit range [-64, 64] (default), so that the file is exact on
                 x86 CPUs without VNNI too (see "Every CPU" in the module's docstring); False:
                 the full [-127, 127], for files that only run on CPUs with VNNI / ARM
    activations: "uint8" (default, asymmetric: zero point from calibration) or "int8"
    """
    onnx = require("onnx")
    src = Path(onnx_path)
    _check_options(src, method, scope, max_images)
    if activations not in ("uint8", "int8"):
        raise ValueError(f"activations must be 'uint8' or 'int8', got {activations!r}")
    out = Path(out_path) if out_path is not None else src.with_name(src.stem + ".int8.onnx")
    if out.resolve() == src.resolve():
        raise ValueError(f"{out}: the quantised graph would overwrite its source")

    proto = onnx.load(str(src))
    size, takes_sizes = _graph_input_size(proto, src, imgsz)
    sources = calibration_sources(calibration, max_images)
    nodes = quantizable_nodes(proto, scope)
    if not nodes:
        raise ValueError(f"{src}: no {scope!r} operators to quantise (Conv / MatMul / Gemm)")
    out.parent.mkdir(parents=True, exist_ok=True)
    _quantize(src, out, ImageReader(sources, size, takes_sizes, exif), nodes, method, reduce_range, activations)
    _restore_metadata(out, proto, {"method": method, "scope": scope, "images": len(sources),
                                   "imgsz": list(size), "nodes": len(nodes), "reduce_range": reduce_range,
                                   "weights": f"int8 per-channel symmetric, [-{64 if reduce_range else 127}, "
                                              f"{64 if reduce_range else 127}]",
                                   "activations": f"{activations} per-tensor asymmetric",
                                   "saturation_free_without_vnni": reduce_range or activations == "int8"})
    return out


def _check_options(src: Path, method: str, scope: str, max_images: int) -> None:
    if not src.is_file():
        raise ValueError(f"{src}: no such ONNX file")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")


def _quantize(src: Path, out: Path, reader: ImageReader, nodes: list[str], method: str, reduce_range: bool,
              activations: str = "uint8") -> None:
    """ONNX Runtime's static quantisation: QDQ, per-channel symmetric int8 weights, per-tensor activations."""
    q = require("onnxruntime.quantization")
    methods = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
               "entropy": q.CalibrationMethod.Entropy}
    # ONNX Runtime logs a pre-processing hint on every call and the histogram methods print
    # their settings: neither is news to the caller.
    with _quiet(logging.getLogger()), contextlib.redirect_stdout(io.StringIO()):
        q.quantize_static(
            str(src), str(out), reader, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_quantize=nodes,
            per_channel=True, reduce_range=reduce_range,
            activation_type=q.QuantType.QUInt8 if activations == "uint8" else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, calibrate_method=methods[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                           # feed the images CHUNK at a time, ranges merged between chunks
                           "CalibStridedMinMax": reader.stride(CHUNK)})


def quantizable_nodes(proto, scope: str = "conv") -> list[str]:
    """Names of the nodes `scope` quantises (see the module's docstring), in graph order.

    "trunk" needs the TorchScript exporter's scoped node names (`/model/backbone/...`, ours and
    the official deploy graphs); without them it falls back to "conv".
    """
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    if scope == "all":
        return [n.name for n in nodes]
    if scope == "trunk" and any(n.name.startswith(TRUNK_PREFIXES) for n in nodes):
        return [n.name for n in nodes if n.op_type == "Conv" or n.name.startswith(TRUNK_PREFIXES)]
    return [n.name for n in nodes if n.op_type == "Conv"]


class ImageReader:
    """ONNX Runtime's calibration data reader: one pre-processed image per `get_next()`.

    Each feed: {'images': [1, 3, h, w] float32 in [0, 1]} (+ 'orig_target_sizes' [1, 2] int64
    (w, h) when the graph takes it). Images are read when asked for, so only a chunk is in memory.
    `set_range` and `__len__` let ONNX Runtime calibrate chunk by chunk (CalibStridedMinMax).
    """

    def __init__(self, sources: list, imgsz: tuple[int, int], takes_sizes: bool, exif: bool = True):
        self.sources, self.imgsz, self.takes_sizes, self.exif = sources, imgsz, takes_sizes, exif
        self._range = iter(range(len(sources)))

    def __len__(self) -> int:
        return len(self.sources)

    def stride(self, chunk: int) -> int:
        """The largest chunk size <= `chunk` that divides the number of images (ONNX Runtime needs one)."""
        return max(s for s in range(1, min(chunk, len(self)) + 1) if len(self) % s == 0)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = iter(range(start_index, min(end_index, len(self))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._range, None)
        return None if i is None else self.feed(self.sources[i])

    def rewind(self) -> None:
        self._range = iter(range(len(self)))

    def feed(self, source) -> dict[str, np.ndarray]:
        image = read_image(source, self.exif) if isinstance(source, Path) else source
        feed = {"images": preprocess(image, self.imgsz).unsqueeze(0).numpy()}
        if self.takes_sizes:
            feed["orig_target_sizes"] = np.array([[image.shape[1], image.shape[0]]], np.int64)
        return feed


def _graph_input_size(proto, path: Path, imgsz) -> tuple[tuple[int, int], bool]:
    """((h, w) to calibrate at, whether the graph takes `orig_target_sizes`)."""
    inputs = {i.name: i for i in proto.graph.input}
    if "images" not in inputs:
        raise ValueError(f"{path}: no 'images' input (inputs: {sorted(inputs)}); not an rtdetr / RT-DETR graph")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs["images"].type.tensor_type.shape.dim]
    fixed = tuple(dims[2:]) if len(dims) == 4 and None not in dims[2:] else None
    if imgsz is None:
        if fixed is None:
            raise ValueError(f"{path}: the graph's input size is not fixed (dynamic_hw); pass imgsz=(h, w)")
        return fixed, "orig_target_sizes" in inputs
    size = check_imgsz(imgsz)
    if fixed is not None and size != fixed:
        raise ValueError(f"{path}: the graph takes {fixed[0]}x{fixed[1]} inputs, got imgsz={imgsz}")
    return size, "orig_target_sizes" in inputs


def calibration_sources(calibration, max_images: int) -> list:
    """Image paths (Path) or [H, W, 3] uint8 arrays, at most max_images, evenly spread."""
    if calibration is None:
        raise ValueError("calibration images are needed: a folder, a list of image paths or of uint8 arrays")
    if isinstance(calibration, (str, Path)):
        sources = _images_in(Path(calibration))
    elif isinstance(calibration, np.ndarray) and calibration.ndim == 3:
        sources = [calibration]
    elif isinstance(calibration, Sequence) or isinstance(calibration, np.ndarray):
        sources = [_one_source(x, i) for i, x in enumerate(calibration)]
    else:
        raise ValueError(f"calibration must be a folder, a list of image paths or of uint8 arrays, "
                         f"got {type(calibration).__name__}")
    if not sources:
        raise ValueError("no calibration images found (the list is empty)")
    if len(sources) > max_images:  # spread over the whole list (sorted files are often grouped)
        sources = [sources[i] for i in np.linspace(0, len(sources) - 1, max_images).round().astype(int)]
    return sources


def _one_source(x, index: int):
    if isinstance(x, (str, Path)):
        path = Path(x)
        if not path.is_file():
            raise ValueError(f"{path}: calibration image not found")
        return path
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"calibration image {index}: expected [H, W, 3] uint8 RGB, got {x.dtype} "
                             f"{list(x.shape)}")
        return x
    raise ValueError(f"calibration image {index}: expected a path or a [H, W, 3] uint8 array, got {type(x).__name__}")


def _images_in(folder: Path) -> list[Path]:
    """The images of a folder: its own files, else its data set's train split, else any below it."""
    if not folder.exists():
        raise ValueError(f"{folder}: calibration folder not found")
    if folder.is_file():
        if folder.suffix.lower() in IMAGE_SUFFIXES:
            return [folder]
        raise ValueError(f"{folder}: not an image or a folder of calibration images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        files = _dataset_images(folder) or sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no calibration images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _dataset_images(folder: Path) -> list[Path]:
    """The train split's images when `folder` is a data set (COCO, YOLO, VOC), else []."""
    from rtdetr.data import DatasetError, load_dataset
    try:
        return sorted(r.path for r in load_dataset(folder, "train").records)
    except (DatasetError, ValueError):
        return []


def _restore_metadata(path: Path, source, info: dict) -> None:
    """Copy the source graph's metadata (rtdetr.* and others) onto the quantised graph, plus
    `rtdetr.quantization`."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in source.metadata_props}
    props.update({p.key: p.value for p in proto.metadata_props if p.key not in props})
    props["rtdetr.quantization"] = json.dumps(info)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


class _quiet:
    """Raise `logger`'s level to ERROR for a while."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
