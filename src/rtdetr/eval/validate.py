"""Evaluating a detector on a data set split: the loop the trainer runs every epoch, and `validate()`
(what `Detector.val` and `rtdetr val` run).

Both take a PyTorch `RTDETR` or an exported graph (`rtdetr.load_model("m.onnx" / "m.xml")`,
int8 graphs from `rtdetr.export.quantize.quantize_int8` included): a graph that ends in the
post-processing gives its detections (`.detect`), a raw one its outputs, post-processed here
as the PyTorch model's are.

Segmentation models' detections also carry 'masks', mask logits [k, h/4, w/4] at 1/4 of the
network input: when the evaluator scores masks, the 100 best of each image are pasted to the
image's original size (`paste_masks`, probability 0.5, cropped to their boxes), run-length coded and scored (COCO
"segm") beside the boxes; the result's `segm` holds the mask metrics.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from rtdetr.core import distributed as dist
from rtdetr.core.sizes import check_imgsz
from rtdetr.models.nn.detector import module_of
from rtdetr.models.postprocess import paste_masks, postprocess
from rtdetr.eval.coco_eval import CocoEvaluator
from rtdetr.eval.result import EvalResult
from rtdetr.core.masks import encode_rle
from rtdetr.eval.segm import best_rows


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on `device` (a no-op for dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_exported(model) -> bool:
    """An exported graph run by a deployment runtime (`rtdetr.runtime.ExportedModel`), not a torch module."""
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
        if evaluator.keeps_masks:
            detections = [with_mask_rles(d, size, evaluator.segm_max_dets) for d, size in zip(detections, sizes)]
        evaluator.update([t["image_id"] for t in targets], detections)
    evaluator.synchronize()
    if not exported:
        model.train(was_training)
    return evaluator.compute() if dist.is_main() else None


def with_mask_rles(det: dict, size_wh: torch.Tensor, limit: int | None = 100) -> dict:
    """One image's detections with its mask logits 'masks' [k, h, w] replaced by 'rles': k
    entries, the RLE of the pasted mask (the image's (w, h) = size_wh, logit threshold 0, cropped
    to its box as prediction does) for the `limit` best-scoring detections and None for the
    others. Without 'masks': `det` as it is."""
    if "masks" not in det:
        return det
    rows = best_rows(det["scores"], limit)
    index = torch.as_tensor(rows, device=det["masks"].device)
    logits, boxes = det["masks"][index], det["boxes"][index.to(det["boxes"].device)]
    w, h = (int(v) for v in size_wh)
    rles: list[dict | None] = [None] * len(det["scores"])
    for row, rle in zip(rows.tolist(), encode_rle(paste_masks(logits, (h, w), boxes_xyxy=boxes))):
        rles[row] = rle
    return {**{k: v for k, v in det.items() if k != "masks"}, "rles": rles}


def _detect_exported(model, images: torch.Tensor, sizes_wh: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Detections of an exported graph for images [B, 3, H, W] and sizes [B, 2] (w, h), as
    `postprocess` gives them for the PyTorch model (the top 300, or all Q*C when fewer)."""
    if model.postprocessed:
        return model.detect(images, sizes_wh)  # the graph's own top-k (300 unless exported otherwise)
    return postprocess({k: v.float() for k, v in model(images).items()}, sizes_wh)


def validate(model, data: str | Path, split: str = "val", imgsz: int | tuple[int, int] | None = None,
             batch: int = 8, workers: int = 2, device: str | torch.device = "cpu",
             amp_dtype: torch.dtype | None = None) -> EvalResult:
    """COCO metrics of a loaded model (an `RTDETR`, a `Detector`, or an exported graph) on one
    split of a data set. imgsz: network input size (default: an exported graph's fixed size, else the
    size it was trained at, else 640).
    A segmentation model is scored on masks too (`.segm`), when the data set has segmentations."""
    from rtdetr.data import load_dataset
    from rtdetr.data.collate import collate_fn
    from rtdetr.data.transforms import val_transforms

    net = module_of(model)
    size = input_size(net, imgsz, getattr(model, "trained_imgsz", None))
    dataset = load_dataset(data, split, transforms=val_transforms(size), masks=is_segmentation_model(net))
    names = getattr(model, "class_names", None)
    if names is not None and list(names) != list(dataset.class_names):
        raise ValueError(f"{getattr(model, 'source', 'the model')}: trained for classes {names}, "
                         f"but {data} ({split}) has {dataset.class_names}")
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_fn, num_workers=workers)
    return evaluate(net, loader, CocoEvaluator.from_dataset(dataset), torch.device(device), amp_dtype)


def is_segmentation_model(model) -> bool:
    """Whether a model predicts masks: an `RTDETR` with a mask head, or an exported graph of one."""
    if is_exported(model):
        return bool(getattr(model, "segmentation", False))
    return getattr(getattr(model, "cfg", None), "task", "detect") == "segment"


def input_size(model, imgsz, trained: tuple[int, int] | None = None) -> tuple[int, int]:
    """imgsz as (h, w): the given one, else an exported graph's fixed size, else the size the
    model was trained at (`trained`, a `Detector`'s `trained_imgsz`), else 640."""
    fixed = getattr(model, "imgsz", None) if is_exported(model) else None
    if imgsz is None:
        return tuple(fixed or trained or (640, 640))
    size = check_imgsz(imgsz)
    if fixed and tuple(size) != tuple(fixed):
        path = getattr(model, "path", "the graph")
        raise ValueError(f"{path} was exported for {fixed[0]}x{fixed[1]} inputs, got imgsz={imgsz} "
                         f"(leave imgsz out to use the graph's)")
    return size
