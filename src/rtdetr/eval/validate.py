"""Evaluating a detector on a data set split: the loop the trainer runs every epoch, and `val()`.

Both take a PyTorch `RTDETR` or an exported graph (`rtdetr.load_model("m.onnx" / "m.xml")`,
int8 graphs from `rtdetr.deploy.quantize.quantize_int8` included): a graph that ends in the
post-processing gives its detections (`.detect`), a raw one its outputs, post-processed here
as the PyTorch model's are.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as dist
from ..nn.postprocess import postprocess
from .coco_eval import CocoEvaluator
from .result import EvalResult


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on `device` (a no-op for dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_exported(model) -> bool:
    """An exported graph run by a deployment runtime (`rtdetr.deploy.ExportedModel`), not a torch module."""
    return not isinstance(model, nn.Module) and hasattr(model, "postprocessed")


@torch.no_grad()
def evaluate(model, loader: DataLoader, evaluator: CocoEvaluator, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> EvalResult | None:
    """COCO metrics of `model` on `loader` (every process takes part; rank 0 gets the result).

    model: an `RTDETR`, or an exported graph (runs where its runtime runs; device and amp_dtype
    are for PyTorch models). The loader gives (images [B, 3, H, W], targets with 'image_id' and
    'orig_size' (w, h)).
    """
    exported = is_exported(model)
    was_training = False if exported else model.training
    model.eval()
    evaluator.reset()
    for images, targets in loader:
        sizes = torch.stack([t["orig_size"] for t in targets])
        if exported:
            detections = _detect_exported(model, images, sizes)
        else:
            with autocast(device, amp_dtype):
                out = model(images.to(device))
            out = {k: v.float() for k, v in out.items()}
            detections = postprocess(out, sizes.to(device))
        evaluator.update([t["image_id"] for t in targets], detections)
    evaluator.synchronize()
    if not exported:
        model.train(was_training)
    return evaluator.compute() if dist.is_main() else None


def _detect_exported(model, images: torch.Tensor, sizes_wh: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Detections of an exported graph for images [B, 3, H, W] and sizes [B, 2] (w, h), as
    `postprocess` gives them for the PyTorch model (the top 300, or all Q*C when fewer)."""
    if model.postprocessed:
        return model.detect(images, sizes_wh)  # the graph's own top-k (300 unless exported otherwise)
    return postprocess({k: v.float() for k, v in model(images).items()}, sizes_wh)


def val(weights: str | Path, data: str | Path, split: str = "val", imgsz: int | tuple[int, int] | None = None,
        batch: int = 8, workers: int = 2, device: str = "cpu", decoder_layers: int | None = None, *,
        runtime: str | None = None, precision: str | None = None, threads: int | None = None) -> EvalResult:
    """COCO metrics of a checkpoint saved by rtdetr, or of an exported model, on one split of a data set.

    weights: a checkpoint (best.pt, last.pt), or an exported graph: `.onnx` (ONNX Runtime, or
             runtime="openvino"), `.xml` (OpenVINO), `.engine` (TensorRT)
    imgsz:   network input size (default: an exported graph's fixed size, else 640)
    runtime, precision, threads: how an exported graph runs (e.g. runtime="openvino",
             precision="bf16"); precision="int8" asks for a quantised graph (`quantize_int8`),
             whose float parts then run in fp32
    """
    from ..data import load_dataset
    from ..data.collate import collate_fn
    from ..data.transforms import val_transforms

    model = _load(weights, decoder_layers, device, runtime, precision, threads)
    size = _input_size(model, imgsz, weights)
    dataset = load_dataset(data, split, transforms=val_transforms(size))
    names = getattr(model, "class_names", None)
    if names is not None and list(names) != list(dataset.class_names):
        raise ValueError(f"{weights}: trained for classes {names}, but {data} ({split}) has {dataset.class_names}")
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_fn, num_workers=workers)
    return evaluate(model, loader, CocoEvaluator.from_dataset(dataset), torch.device(device))


def _load(weights, decoder_layers, device, runtime, precision, threads):
    """The model behind `weights`; runtime options are for exported graphs only."""
    from ..api import EXPORTED_SUFFIXES, load_model
    options = {k: v for k, v in (("runtime", runtime), ("precision", precision), ("threads", threads))
               if v is not None}
    if Path(weights).suffix.lower() not in EXPORTED_SUFFIXES:
        if options:
            raise ValueError(f"{next(iter(options))}= is for exported models (.onnx, .xml, .engine); "
                             f"{weights} runs in PyTorch")
        return load_model(weights, decoder_layers=decoder_layers, device=device)
    want_int8 = options.get("precision") == "int8"
    if want_int8:
        del options["precision"]  # the graph is int8 already; the rest of it runs in fp32
    model = load_model(weights, **options)
    if want_int8 and model.precision != "int8":
        raise ValueError(f"{weights}: not a quantised graph (no QuantizeLinear nodes); "
                         f"make one with rtdetr.deploy.quantize.quantize_int8 or `rtdetr export --int8`")
    if decoder_layers is not None:
        model._check_decoder_layers(decoder_layers)  # baked into the graph: only its own number works
    return model


def _input_size(model, imgsz, weights) -> tuple[int, int]:
    """imgsz as (h, w): the given one, else an exported graph's fixed size, else 640."""
    from ..train.config import as_size
    fixed = getattr(model, "imgsz", None) if is_exported(model) else None
    if imgsz is None:
        return tuple(fixed) if fixed else as_size(640)
    size = as_size(imgsz)
    if fixed and tuple(size) != tuple(fixed):
        raise ValueError(f"{weights} was exported for {fixed[0]}x{fixed[1]} inputs, got imgsz={imgsz} "
                         f"(leave imgsz out to use the graph's)")
    return size
