"""Evaluating a detector on a data set split: the loop the trainer runs every epoch, and `val()`."""
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


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, evaluator: CocoEvaluator, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> EvalResult | None:
    """COCO metrics of `model` on `loader` (every process takes part; rank 0 gets the result).

    The loader gives (images [B, 3, H, W], targets with 'image_id' and 'orig_size' (w, h)).
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    for images, targets in loader:
        with autocast(device, amp_dtype):
            out = model(images.to(device))
        out = {k: v.float() for k, v in out.items()}
        sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        evaluator.update([t["image_id"] for t in targets], postprocess(out, sizes))
    evaluator.synchronize()
    model.train(was_training)
    return evaluator.compute() if dist.is_main() else None


def val(weights: str | Path, data: str | Path, split: str = "val", imgsz: int | tuple[int, int] = 640,
        batch: int = 8, workers: int = 2, device: str = "cpu", decoder_layers: int | None = None) -> EvalResult:
    """COCO metrics of a checkpoint saved by rtdetr on one split of a data set (any format)."""
    from ..api import load_model
    from ..data import load_dataset
    from ..data.collate import collate_fn
    from ..data.transforms import val_transforms
    from ..train.config import as_size

    model = load_model(weights, decoder_layers=decoder_layers, device=device)
    dataset = load_dataset(data, split, transforms=val_transforms(as_size(imgsz)))
    names = getattr(model, "class_names", None)
    if names is not None and list(names) != list(dataset.class_names):
        raise ValueError(f"{weights}: trained for classes {names}, but {data} ({split}) has {dataset.class_names}")
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_fn, num_workers=workers)
    return evaluate(model, loader, CocoEvaluator.from_dataset(dataset), torch.device(device))
