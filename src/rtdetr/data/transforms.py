"""The official RT-DETR augmentation recipe on torchvision transforms v2.

What a data set gives (the input of every pipeline here)::

    image:  tv_tensors.Image, uint8 [3, H, W], RGB
    target: dict
        boxes      tv_tensors.BoundingBoxes [n, 4], XYXY, absolute pixels, canvas_size=(H, W)
        labels     int64 [n]
        image_id   int
        orig_size  int64 [2], (w, h)
        iscrowd    (optional) [n]

What the pipelines return (the input of the model and the criterion)::

    image:  float32 [3, h, w], values in [0, 1] (no mean/std normalisation)
    target: the same dict, with
        boxes      float32 [n', 4], plain tensor, normalised (cx, cy, w, h) in [0, 1]
        labels, iscrowd, area: filtered together with the boxes that were dropped

Train pipeline (`train_transforms`), as in the official `dataloader.yml`:

    1. RandomPhotometricDistort(p=0.5)      strong, stops at `stop_epoch`
    2. RandomZoomOut(fill=0)                strong, stops at `stop_epoch`
    3. RandomIoUCrop(p=0.8)                 strong, stops at `stop_epoch`
    4. SanitizeBoundingBoxes(min_size=1)
    5. RandomHorizontalFlip(p=0.5)
    6. Resize([h, w])                       aspect ratio not kept
    7. SanitizeBoundingBoxes(min_size=1)
    8. ToDtype(float32, scale=True)         uint8 -> [0, 1]
    9. ToNormalizedCxcywh()                 the official ConvertBoxes(fmt='cxcywh', normalize=True)

Val pipeline (`val_transforms`): steps 6, 8 and 9.

How the epoch reaches DataLoader workers: see `SharedEpoch`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from rtdetr.core.sizes import check_imgsz

# The official multi-scale list (`BatchImageCollateFunction`): 640 appears three times.
DEFAULT_SCALES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)

# Per-box fields of a target, kept aligned with the boxes when boxes are dropped.
PER_BOX_KEYS = ("labels", "iscrowd", "area")


@dataclass(frozen=True)
class AugmentConfig:
    """The train augmentation recipe; the defaults are the official RT-DETRv2 ones.

    `size`: (height, width) of the output images (an int means square).
    `photometric`, `zoom_out`, `iou_crop`, `flip`: switch each random op on or off.
    `photometric_p`: per-colour-op probability of RandomPhotometricDistort.
    `iou_crop_p`: probability that RandomIoUCrop runs at all.
    `stop_epoch`: from this epoch on (0-based), photometric / zoom-out / IoU crop are
        skipped and multi-scale is off (None: never stop).
    `scales`: multi-scale square sizes, one picked per batch by the collate function
        (None: no multi-scale, as in the official v2 r18 configs).
    """

    size: int | tuple[int, int] = (640, 640)
    photometric: bool = True
    photometric_p: float = 0.5
    zoom_out: bool = True
    iou_crop: bool = True
    iou_crop_p: float = 0.8
    flip: bool = True
    stop_epoch: int | None = 71
    scales: tuple[int, ...] | None = DEFAULT_SCALES


class SharedEpoch:
    """An epoch number that DataLoader worker processes see change.

    The number lives in a one-element tensor in shared memory. A DataLoader hands the
    data set (with its transforms) and the collate function to each worker process,
    by fork or by pickling (spawn / forkserver; torch shares the tensor's memory instead
    of copying it). Either way the worker's copy reads the same memory, so `set()` in
    the main process is seen by the workers, also by persistent ones
    (`persistent_workers=True`).

    Call `set()` before the epoch's `for batch in loader:` starts: the workers start
    preparing (prefetching) batches as soon as the loader's iterator is created.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._value = torch.full((1,), int(epoch), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value.fill_(int(epoch))

    def get(self) -> int:
        return int(self._value.item())


class Compose:
    """Apply ops in order to `(image, target)`; from `stop_epoch` on skip the strong ones.

    `ops`: transforms v2 ops, each called as `op(image, target) -> (image, target)`.
    `stop_epoch`: first epoch (0-based) in which ops that are instances of `strong_ops`
        are skipped (None: never).
    `strong_ops`: the op classes the stop policy turns off (the official ones:
        RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop).

    `set_epoch(epoch)` reaches DataLoader workers (see `SharedEpoch`); the epoch is 0
    until it is first called.
    """

    STRONG_OPS = (T.RandomPhotometricDistort, T.RandomZoomOut, T.RandomIoUCrop)

    def __init__(
        self,
        ops: Sequence[Any],
        stop_epoch: int | None = None,
        strong_ops: tuple[type, ...] = STRONG_OPS,
    ) -> None:
        self.ops = list(ops)
        self.stop_epoch = stop_epoch
        self.strong_ops = tuple(strong_ops)
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def strong_ops_on(self) -> bool:
        """Whether the strong ops run in the current epoch."""
        return self.stop_epoch is None or self.epoch < self.stop_epoch

    def active_ops(self) -> list[Any]:
        """The ops that run in the current epoch, in order."""
        if self.strong_ops_on():
            return list(self.ops)
        return [op for op in self.ops if not isinstance(op, self.strong_ops)]

    def __call__(self, image: Any, target: dict) -> tuple[Any, dict]:
        for op in self.active_ops():
            image, target = op(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = [f"    {op}" for op in self.ops]
        return f"Compose(stop_epoch={self.stop_epoch}, ops=[\n" + "\n".join(lines) + "\n])"


class RandomIoUCrop(T.RandomIoUCrop):
    """torchvision's RandomIoUCrop (SSD crop), run only with probability `p`.

    Samples without boxes pass unchanged (torchvision would, after many random tries,
    end on its "keep the whole image" option anyway). Called as `op(image, target)`.
    The crop marks the boxes whose centre falls outside it as degenerate: a
    `SanitizeBoundingBoxes` must follow.
    """

    def __init__(self, p: float = 0.8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.p = p

    def forward(self, image: Any, target: dict) -> tuple[Any, dict]:
        if torch.rand(1).item() >= self.p or len(target["boxes"]) == 0:
            return image, target
        return super().forward(image, target)


class ToNormalizedCxcywh(T.Transform):
    """BoundingBoxes [n, 4] (any format, absolute pixels) -> float32 [n, 4] plain tensor,
    (cx, cy, w, h) divided by the image (w, h, w, h). Other inputs pass unchanged."""

    _transformed_types = (tv_tensors.BoundingBoxes,)

    def transform(self, inpt: Any, params: dict[str, Any]) -> torch.Tensor:
        height, width = inpt.canvas_size
        boxes = F.convert_bounding_box_format(inpt, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return boxes.as_subclass(torch.Tensor).float() / scale


def per_box_fields(sample: tuple[Any, dict]) -> tuple[torch.Tensor, ...]:
    """The target's per-box tensors (labels, iscrowd, area when present), for
    `SanitizeBoundingBoxes(labels_getter=...)` to filter along with the boxes."""
    _, target = sample
    return tuple(target[key] for key in PER_BOX_KEYS if isinstance(target.get(key), torch.Tensor))


def sanitize(min_size: float = 1.0) -> T.SanitizeBoundingBoxes:
    """Drop boxes narrower or lower than `min_size` pixels (and their per-box fields)."""
    return T.SanitizeBoundingBoxes(min_size=min_size, labels_getter=per_box_fields)



def _finish(size: int | Sequence[int]) -> list[Any]:
    """The last, deterministic steps shared by train and val: resize, to float, boxes."""
    return [
        T.Resize(list(check_imgsz(size, 'size', stride=1))),
        T.ToDtype(torch.float32, scale=True),
        ToNormalizedCxcywh(),
    ]


def train_transforms(cfg: AugmentConfig = AugmentConfig()) -> Compose:
    """The official train pipeline (see the module docstring), following `cfg`."""
    ops: list[Any] = []
    if cfg.photometric:
        ops.append(T.RandomPhotometricDistort(p=cfg.photometric_p))
    if cfg.zoom_out:
        ops.append(T.RandomZoomOut(fill=0))
    if cfg.iou_crop:
        ops.append(RandomIoUCrop(p=cfg.iou_crop_p))
    ops.append(sanitize())
    if cfg.flip:
        ops.append(T.RandomHorizontalFlip())
    resize, to_float, to_cxcywh = _finish(cfg.size)
    ops += [resize, sanitize(), to_float, to_cxcywh]
    return Compose(ops, stop_epoch=cfg.stop_epoch)


def val_transforms(size: int | tuple[int, int] = (640, 640)) -> Compose:
    """Resize to `size` (height, width), image to float [0, 1], boxes to normalised cxcywh."""
    return Compose(_finish(size))
