"""The official RT-DETR augmentation recipe on torchvision transforms v2.

What a data set gives (the input of every pipeline here)::

    image:  tv_tensors.Image, uint8 [3, H, W], RGB
    target: dict
        boxes      tv_tensors.BoundingBoxes [n, 4], XYXY, absolute pixels, canvas_size=(H, W)
        labels     int64 [n]
        image_id   int
        orig_size  int64 [2], (w, h)
        iscrowd    (optional) [n]
        masks      (optional) tv_tensors.Mask uint8 [n, H, W], one per box (rtdetr.data.masks)

What the pipelines return (the input of the model and the criterion)::

    image:  float32 [3, h, w], values in [0, 1] (no mean/std normalisation)
    target: the same dict, with
        boxes      float32 [n', 4], plain tensor, normalised (cx, cy, w, h) in [0, 1]
        labels, iscrowd, area: filtered together with the boxes that were dropped
        masks      uint8 [n', h, w] (0/1), plain tensor, one per box, at the image's size

Masks go through every op with the image and the boxes: torchvision moves them as it moves
the pixels (zoom-out pads them with 0, IoU crop and flip cut and mirror them, Resize and the
Mosaic's affine sample them nearest-neighbour), and SanitizeBoundingBoxes drops the masks of
the boxes it drops (torchvision filters every tv_tensors.Mask along with the boxes). A mask
may lose all its pixels while its box stays (e.g. a thin shape resized down): it is kept,
empty, aligned with its box.

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

With DEIM's three-phase policy (`AugmentConfig.mosaic_epochs` (e0, e1), `stop_epoch` e2), a
`Mosaic` (`rtdetr.data.mosaic`) comes first, and `Compose` decides per epoch:

    epoch < e0        no Mosaic, no strong op (photometric / zoom-out / IoU crop)
    e0 <= epoch < e1  Mosaic with probability `mosaic_prob`; a mosaic sample skips zoom-out
                      and IoU crop (photometric still runs), the others get the plain pipeline
    e1 <= epoch < e2  the plain pipeline
    epoch >= e2       no Mosaic, no strong op

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
from rtdetr.data.dataset import PER_BOX_KEYS
from rtdetr.data.mosaic import Mosaic

# The official multi-scale list (`BatchImageCollateFunction`): 640 appears three times.
DEFAULT_SCALES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)



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
    `mosaic_epochs`: (e0, e1) of DEIM's three-phase policy (see the module docstring), with
        `stop_epoch` as e2; None: no Mosaic, the strong ops from epoch 0 (the v2 policy).
    `mosaic_prob`, `mosaic_size`: probability of a mosaic in [e0, e1), its shorter side per image.
    `mixup_epochs`, `mixup_prob`: the collate's MixUp in epochs [start, end) (None: none).
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
    mosaic_epochs: tuple[int, int] | None = None
    mosaic_prob: float = 0.5
    mosaic_size: int = 320
    mixup_epochs: tuple[int, int] | None = None
    mixup_prob: float = 0.5


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
    `mosaic_epochs`: (e0, e1): DEIM's three-phase policy (the module docstring): the strong
        ops also skipped before e0, and `Mosaic` ops run in [e0, e1) on a sample with
        probability `mosaic_prob`, which then skips the `mosaic_skips` ops (zoom-out, IoU
        crop). None: `Mosaic` ops never run.

    `set_epoch(epoch)` reaches DataLoader workers (see `SharedEpoch`); the epoch is 0
    until it is first called. The mosaic draw (`torch.rand`) happens only in [e0, e1), so
    the other epochs draw exactly what they would without a policy.
    """

    STRONG_OPS = (T.RandomPhotometricDistort, T.RandomZoomOut, T.RandomIoUCrop)
    MOSAIC_SKIPS = (T.RandomZoomOut, T.RandomIoUCrop)

    def __init__(
        self,
        ops: Sequence[Any],
        stop_epoch: int | None = None,
        strong_ops: tuple[type, ...] = STRONG_OPS,
        mosaic_epochs: tuple[int, int] | None = None,
        mosaic_prob: float = 0.5,
        mosaic_skips: tuple[type, ...] = MOSAIC_SKIPS,
    ) -> None:
        self.ops = list(ops)
        self.stop_epoch = stop_epoch
        self.strong_ops = tuple(strong_ops)
        self.mosaic_epochs = tuple(mosaic_epochs) if mosaic_epochs is not None else None
        self.mosaic_prob = mosaic_prob
        self.mosaic_skips = tuple(mosaic_skips)
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def strong_ops_on(self) -> bool:
        """Whether the strong ops run in the current epoch."""
        started = self.mosaic_epochs is None or self.epoch >= self.mosaic_epochs[0]
        return started and (self.stop_epoch is None or self.epoch < self.stop_epoch)

    def mosaic_on(self) -> bool:
        """Whether samples may become mosaics in the current epoch."""
        return (self.mosaic_epochs is not None and self.mosaic_epochs[0] <= self.epoch < self.mosaic_epochs[1]
                and self.strong_ops_on())

    def active_ops(self, with_mosaic: bool = False) -> list[Any]:
        """The ops that run in the current epoch, in order, for a sample made a mosaic or not."""
        strong = self.strong_ops_on()
        out = []
        for op in self.ops:
            if isinstance(op, Mosaic):
                keep = with_mosaic
            elif isinstance(op, self.strong_ops):
                keep = strong and not (with_mosaic and isinstance(op, self.mosaic_skips))
            else:
                keep = True
            if keep:
                out.append(op)
        return out

    def __call__(self, image: Any, target: dict) -> tuple[Any, dict]:
        with_mosaic = self.mosaic_on() and torch.rand(()).item() < self.mosaic_prob
        for op in self.active_ops(with_mosaic):
            image, target = op(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = [f"    {op}" for op in self.ops]
        policy = f", mosaic_epochs={self.mosaic_epochs}, mosaic_prob={self.mosaic_prob}" if self.mosaic_epochs else ""
        return f"Compose(stop_epoch={self.stop_epoch}{policy}, ops=[\n" + "\n".join(lines) + "\n])"


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
    (cx, cy, w, h) divided by the image (w, h, w, h); the last step to the model's format, so
    a Mask [n, h, w] also becomes a plain tensor (same dtype and values). Other inputs pass
    unchanged."""

    _transformed_types = (tv_tensors.BoundingBoxes, tv_tensors.Mask)

    def transform(self, inpt: Any, params: dict[str, Any]) -> torch.Tensor:
        if isinstance(inpt, tv_tensors.Mask):
            return inpt.as_subclass(torch.Tensor)
        height, width = inpt.canvas_size
        boxes = F.convert_bounding_box_format(inpt, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return boxes.as_subclass(torch.Tensor).float() / scale


def per_box_fields(sample: tuple[Any, dict]) -> tuple[torch.Tensor, ...]:
    """The target's per-box tensors (labels, iscrowd, area when present), for
    `SanitizeBoundingBoxes(labels_getter=...)` to filter along with the boxes. Not the masks:
    torchvision filters a tv_tensors.Mask itself, and keeps it a Mask for the ops after."""
    _, target = sample
    return tuple(target[key] for key in PER_BOX_KEYS if isinstance(target.get(key), torch.Tensor))


def sanitize(min_size: float = 1.0) -> T.SanitizeBoundingBoxes:
    """Drop boxes narrower or lower than `min_size` pixels (and their per-box fields and masks)."""
    return T.SanitizeBoundingBoxes(min_size=min_size, labels_getter=per_box_fields)



def _finish(size: int | Sequence[int]) -> list[Any]:
    """The last, deterministic steps shared by train and val: resize, to float, boxes."""
    return [
        T.Resize(list(check_imgsz(size, 'size', stride=1))),
        T.ToDtype(torch.float32, scale=True),
        ToNormalizedCxcywh(),
    ]


def train_transforms(cfg: AugmentConfig = AugmentConfig(), source: Any = None) -> Compose:
    """The official train pipeline (see the module docstring), following `cfg`.

    `source`: where a `Mosaic` takes its other samples (the training data set; `len()` and
    `load_item(index)`), needed when `cfg.mosaic_epochs` is set; it can also be set later
    as the `Mosaic` op's `source`."""
    ops: list[Any] = []
    if cfg.mosaic_epochs is not None:
        ops.append(Mosaic(source, output_size=cfg.mosaic_size))
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
    return Compose(ops, stop_epoch=cfg.stop_epoch, mosaic_epochs=cfg.mosaic_epochs, mosaic_prob=cfg.mosaic_prob)


def val_transforms(size: int | tuple[int, int] = (640, 640)) -> Compose:
    """Resize to `size` (height, width), image to float [0, 1], boxes to normalised cxcywh."""
    return Compose(_finish(size))
