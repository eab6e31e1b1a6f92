"""The user-facing entry point: `load_model` gives a `Detector`, which predicts, evaluates, trains,
exports, benchmarks and saves.

    import rtdetr
    det = rtdetr.load_model("rtdetrv2_r18vd")         # official COCO weights, downloaded once
    results = det.predict("photos/", conf=0.5)          # list of Result
    metrics = det.val("data/my_set")                    # EvalResult (COCO AP)
    tracks = det.track("street.mp4", save=True)         # Results with track_ids; runs/track/exp
    det.train(data="data/my_set", epochs=12)            # fine-tunes (the recipe's other defaults), then holds best.pt
    det.export("model.onnx")                            # post-processing inside
    out = det.model(x)                                  # the nn.Module: {'pred_logits', 'pred_boxes'}
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rtdetr.core.sizes import check_imgsz
from rtdetr.models.weights import OFFICIAL, load_network, resolve_weights, save_checkpoint

__all__ = ["EXPORTED_SUFFIXES", "OFFICIAL", "Detector", "load_model", "resolve_weights", "save_checkpoint", "val"]

EXPORTED_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")
RUNTIME_OPTIONS = ("runtime", "precision", "threads")


class Detector:
    """A detector with what it needs to be used: the network (`model`: an `RTDETR` nn.Module, or an
    exported graph run by ONNX Runtime / OpenVINO / TensorRT), its class names and data-set
    category ids, and where it came from (`source`).

    Attributes the network has (`cfg`, `num_classes`, `decoder`, `parameters()`, `state_dict()`,
    ...) are reachable on the detector itself; `det(x)` is `det.model(x)`.
    """

    def __init__(self, model, *, class_names: list[str] | None = None, category_ids: list[int] | None = None,
                 source: str | Path | None = None, trained_imgsz: tuple[int, int] | None = None):
        self.model = model
        self.trained_imgsz = None if trained_imgsz is None else tuple(check_imgsz(trained_imgsz))
        self.class_names = list(class_names) if class_names is not None else getattr(model, "class_names", None)
        self.category_ids = list(category_ids) if category_ids is not None else getattr(model, "category_ids", None)
        self.source = str(source) if source is not None else getattr(getattr(model, "cfg", None), "name", None)

    # ------------------------------------------------------------------ the network
    @property
    def is_exported(self) -> bool:
        return not isinstance(self.model, nn.Module)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def task(self) -> str:
        """The task: "segment" for a model with a mask head (or an exported graph of one), else "detect"."""
        if self.is_exported:
            return "segment" if getattr(self.model, "segmentation", False) else "detect"
        return self.model.cfg.task

    @property
    def imgsz(self) -> tuple[int, int] | None:
        """The one input size the model takes (an exported graph of fixed size), else None (any)."""
        return getattr(self.model, "imgsz", None)

    @property
    def default_imgsz(self) -> tuple[int, int] | None:
        """The input size predict, val, serve, export and benchmark use when not told: an exported graph's
        fixed size, else the size a training run of this library trained it at (recorded in its
        checkpoints, as Ultralytics' are), else None (they take 640)."""
        return self.imgsz or self.trained_imgsz

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "model":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def to(self, device) -> Detector:
        self.model = self.model.to(device)
        return self

    def eval(self) -> Detector:
        self.model.eval()
        return self

    def __repr__(self) -> str:
        names = f"{len(self.class_names)} named classes" if self.class_names else f"{self.num_classes} classes"
        masks = ", masks" if self.task == "segment" else ""
        return f"Detector({self.source}: {type(self.model).__name__}, {names}{masks})"

    # ------------------------------------------------------------------ the verbs
    def predict(self, source, **kwargs):
        """Detections on images, folders, globs, videos, arrays or tensors: a list of `Result`
        (a generator with stream=True). Keyword arguments: `rtdetr.predict.Predictor`'s and its call's."""
        from rtdetr.predict import predict
        return predict(self, source, **kwargs)

    def track(self, source, tracker="bytetrack", **kwargs):
        """Objects followed through a video file, webcam index or stream URL: tracked `Result`s
        (`track_ids`: one id per object; only the boxes the tracker kept), a generator with
        stream=True; save=True writes the annotated video and a MOT Challenge file.
        Keyword arguments: `rtdetr.predict.track.track`'s (tracker thresholds) and `Predictor`'s."""
        from rtdetr.predict.track import track
        return track(self, source, tracker=tracker, **kwargs)

    def val(self, data: str | Path, split: str = "val", *, imgsz: int | tuple[int, int] | None = None,
            batch: int = 8, workers: int = 2, device: str | torch.device = "cpu"):
        """COCO metrics (`EvalResult`) on one split of a data set (COCO, YOLO or VOC folder)."""
        from rtdetr.eval.validate import validate
        if not self.is_exported:
            self.model.to(device)
        return validate(self, data, split, imgsz=imgsz, batch=batch, workers=workers, device=device)

    def train(self, data: str | Path, **kwargs):
        """Fine-tune this detector on a data set; returns the run's `TrainResult`.

        Training starts from this detector's weights; afterwards the detector holds the run's best
        weights (`best.pt`, else `last.pt`) and the data set's class names, as Ultralytics' `Model`
        does. Keyword arguments are `rtdetr train`'s (`rtdetr.train.TrainConfig` fields); what is
        not given comes from the architecture's official recipe (custom architectures: the default
        one). `extra_modules` ({name: nn.Module}) and `extra_losses` (callables, see
        `rtdetr.train.ExtraLoss`) add training-only modules and loss terms to the run.
        """
        from rtdetr.models import zoo
        from rtdetr.train.trainer import train
        if self.is_exported:
            raise TypeError(f"{self.source}: an exported graph cannot be trained; load the checkpoint instead")
        if self.model.cfg.name in zoo.ZOO:
            kwargs.setdefault("model", self.model.cfg.name)
        device = next(self.model.parameters()).device
        result = train(initial_model=self, data=str(data), **kwargs)
        weights = result.run_dir / "weights"
        best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
        if best.is_file():
            net, meta = load_network(best)
            self.model, self.class_names, self.category_ids = net.to(device), meta["class_names"], meta["category_ids"]
            self.trained_imgsz = meta["trained_imgsz"]
            self.source = str(best)
        return result

    def export(self, path: str | Path | None = None, format: str = "onnx", imgsz: int | tuple[int, int] | None = None, *,
               int8: bool = False, calibration=None, triton: str | Path | None = None, **options) -> str:
        """Write this detector for a deployment runtime; returns the written file's path.

        format: "onnx" (post-processing inside; run it with `rtdetr.load_model(path)`) or
                "openvino" (the ONNX graph plus its OpenVINO IR `.xml`; returns the `.xml`)
        path:   the .onnx file (default: `<model name>.onnx` in the current folder)
        imgsz:  the graph's input size (default: `default_imgsz`, else 640)
        int8:   also quantise it to int8 (`rtdetr.export.quantize_int8`, calibrated on
                `calibration`: a folder of images or a data set folder) and return that file
        triton: also write an NVIDIA Triton model repository of the (float) ONNX graph in this
                folder (`rtdetr.export.write_triton_repository`: <name>/config.pbtxt, <name>/1/model.onnx)
        options: those of `rtdetr.export.export_onnx` (opset, dynamic_hw, postprocess, num_top, decoder_layers, ...)
        """
        from rtdetr.export import export_onnx, quantize_int8, save_openvino, write_triton_repository
        if format not in ("onnx", "openvino"):
            raise ValueError(f"format must be 'onnx' or 'openvino', got {format!r}")
        if int8 and calibration is None:
            raise ValueError("int8=True needs calibration images: calibration='folder/' (or a data set folder)")
        if self.is_exported:
            raise TypeError(f"{self.source} is exported already")
        imgsz = imgsz if imgsz is not None else (self.default_imgsz or 640)
        onnx_path = export_onnx(self, path or f"{self.model.cfg.name}.onnx", imgsz=check_imgsz(imgsz), **options)
        if triton is not None:
            write_triton_repository(onnx_path, triton)
        if int8:
            onnx_path = quantize_int8(onnx_path, calibration=calibration,
                                      imgsz=imgsz if options.get("dynamic_hw") else None)
        return str(save_openvino(onnx_path) if format == "openvino" else onnx_path)

    def benchmark(self, paths=None, **kwargs):
        """End-to-end latency of inference paths, interleaved (`rtdetr.bench.run_benchmark`); a `BenchmarkReport`."""
        from rtdetr.bench import run_benchmark
        return run_benchmark(self, paths, **kwargs)

    def save(self, path: str | Path, **extra) -> Path:
        """Write the network in the library's own checkpoint format (architecture, class names and
        category ids inside: `rtdetr.load_model(path)` restores this detector), atomically."""
        if self.is_exported:
            raise TypeError(f"{self.source} is an exported graph; its file is {self.model.path}")
        return save_checkpoint(self.model, path, self.class_names, self.category_ids, self.trained_imgsz, **extra)


def load_model(model: str | Path, weights: str | Path | None = OFFICIAL, *, num_classes: int | None = None,
               decoder_layers: int | None = None, device: str | torch.device = "cpu",
               runtime: str | None = None, **runtime_options) -> Detector:
    """A `Detector` in eval mode, for every kind of model file there is.

    model:   a zoo name (`rtdetr.list_models()`), the path of a checkpoint saved by this library
             (it carries its architecture and class names), an official release file (known by its
             published name), or an exported model (`.onnx` for ONNX Runtime, `.xml` for OpenVINO,
             `.engine` for TensorRT; `runtime=` and `runtime_options` such as precision="bf16" or
             threads=2 choose how it runs).
    weights: for a zoo name: "official" (default) downloads its released COCO weights once into
             the cache; a zoo name downloads that model's weights; a path loads that file
             (official release files, official training checkpoints, or ours); None gives random
             initial weights.
    num_classes: defaults to what the weights were trained for (80 for COCO).
    decoder_layers: decoder layers run at inference (default: the architecture's own).
    """
    path = Path(model)
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        from rtdetr.runtime import load_exported
        return Detector(load_exported(path, runtime=runtime, **runtime_options), source=path)
    if runtime is not None or runtime_options:
        given = "runtime" if runtime is not None else next(iter(runtime_options))
        raise ValueError(f"{given}= is for exported models (.onnx, .xml, .engine); {model} runs in PyTorch")
    net, meta = load_network(model, weights, num_classes=num_classes, decoder_layers=decoder_layers)
    return Detector(net.to(device), **meta, source=model)


def val(weights: str | Path, data: str | Path, split: str = "val", imgsz: int | tuple[int, int] | None = None,
        batch: int = 8, workers: int = 2, device: str = "cpu", decoder_layers: int | None = None, *,
        runtime: str | None = None, precision: str | None = None, threads: int | None = None):
    """COCO metrics of a checkpoint saved by rtdetr, or of an exported model, on one split of a data set.

    weights: a checkpoint (best.pt, last.pt), or an exported graph: `.onnx` (ONNX Runtime, or
             runtime="openvino"), `.xml` (OpenVINO), `.engine` (TensorRT)
    imgsz:   network input size (default: an exported graph's fixed size, else the size it was
             trained at, else 640)
    runtime, precision, threads: how an exported graph runs (e.g. runtime="openvino",
             precision="bf16"); precision="int8" asks for a quantised graph (`quantize_int8`),
             whose float parts then run in fp32
    """
    options = {k: v for k, v in (("runtime", runtime), ("precision", precision), ("threads", threads))
               if v is not None}
    want_int8 = options.get("precision") == "int8"
    if want_int8 and Path(weights).suffix.lower() in EXPORTED_SUFFIXES:
        del options["precision"]  # the graph is int8 already; the rest of it runs in fp32
    exported = Path(weights).suffix.lower() in EXPORTED_SUFFIXES
    det = load_model(weights, **options) if exported else load_model(weights, decoder_layers=decoder_layers,
                                                                        device=device, **options)
    if want_int8 and det.model.precision != "int8":
        raise ValueError(f"{weights}: not a quantised graph (no QuantizeLinear nodes); "
                         f"make one with rtdetr.export.quantize_int8 or `rtdetr export --int8`")
    if exported and decoder_layers is not None:
        det.model._check_decoder_layers(decoder_layers)  # baked into the graph: only its own number works
    return det.val(data, split, imgsz=imgsz, batch=batch, workers=workers, device=device)
