"""Batch collation, with the official RT-DETR multi-scale training.

A batch item is what the transforms of `rtdetr.data.transforms` return:
`(image float32 [3, h, w], target dict)`, all images of one size. A batch is
`(images float32 [B, 3, h, w], [target, ...])`.

Multi-scale (the official `BatchImageCollateFunction`): until `stop_epoch`, each batch
is resized as a whole to one square size picked at random from `scales`, with
`torch.nn.functional.interpolate` in mode "nearest" (the official default). Boxes are
normalised, so they stay as they are. Masks (`target["masks"]` uint8 [n, h, w]) are left at
the pipeline's output size: a mask covers the whole image at any resolution, and the mask
loss samples it at normalised point coordinates, so it stays aligned with the resized image
(resizing every mask per batch would cost time and memory for nothing).

MixUp (DEIM's, in the official `BatchImageCollateFunction`), before the resize: in epochs
[start, end) of `mixup_epochs`, with probability `mixup_prob` per batch, image i becomes
`beta * image_i + (1 - beta) * image_(i-1)` (the batch rolled by one, image 0 mixed with the
last), beta ~ U(0.45, 0.55) drawn once per batch, and target i gets the boxes, per-box
fields and masks of both (its own first). Matching stays one-to-one: every box of both is an object.

The picks (size, whether to mix, beta) are pure functions of (seed, epoch, the batch's image
ids): they do not depend on which DataLoader worker builds the batch nor on how many batches
came before, so a run resumed in the middle of an epoch (with the same sampler order) gets
the same batches.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

import torch
from torch.nn.functional import interpolate

from rtdetr.data.dataset import PER_BOX_KEYS
from rtdetr.data.masks import MASKS
from rtdetr.data.transforms import AugmentConfig, SharedEpoch

# The range of the MixUp weight beta of the image's own pixels.
MIXUP_BETA = (0.45, 0.55)


def collate_fn(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """[(image [3, h, w], target)] * B -> (images [B, 3, h, w], [target] * B)."""
    images = torch.stack([image.as_subclass(torch.Tensor) for image, _ in batch])
    targets = [target for _, target in batch]
    return images, targets


class MultiScaleCollate:
    """`collate_fn` that also resizes each batch to a random size from `scales`.

    `scales`: sizes to pick from, each an int (square) or (height, width); repeat a size
        to make it likelier. None or empty: no resizing (plain `collate_fn`).
    `stop_epoch`: first epoch (0-based) without multi-scale (None: never stop).
    `seed`: base seed of the picks.
    `mode`: `interpolate` mode ("nearest" as in the official code).
    `mixup_epochs`, `mixup_prob`: MixUp (see the module docstring) in epochs [start, end)
        with this probability per batch; None: never.

    Every target needs an `image_id` (the key of the pick). `set_epoch(epoch)` reaches
    DataLoader workers (see `rtdetr.data.transforms.SharedEpoch`).
    """

    def __init__(
        self,
        scales: Sequence[int | tuple[int, int]] | None,
        stop_epoch: int | None = None,
        seed: int = 0,
        mode: str = "nearest",
        mixup_epochs: tuple[int, int] | None = None,
        mixup_prob: float = 0.5,
    ) -> None:
        self.scales = list(scales or [])
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.mode = mode
        self.mixup_epochs = tuple(mixup_epochs) if mixup_epochs is not None else None
        self.mixup_prob = mixup_prob
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def multi_scale_on(self) -> bool:
        """Whether batches are resized in the current epoch."""
        before_stop = self.stop_epoch is None or self.epoch < self.stop_epoch
        return bool(self.scales) and before_stop

    def pick_size(self, targets: Sequence[dict]) -> tuple[int, int] | None:
        """The (height, width) of this batch, or None when multi-scale is off."""
        if not self.multi_scale_on():
            return None
        image_ids = [int(target["image_id"]) for target in targets]
        rng = random.Random(_batch_seed(self.seed, self.epoch, image_ids))
        scale = rng.choice(self.scales)
        return (scale, scale) if isinstance(scale, int) else (int(scale[0]), int(scale[1]))

    def mixup_on(self) -> bool:
        """Whether batches may be mixed in the current epoch."""
        return self.mixup_epochs is not None and self.mixup_epochs[0] <= self.epoch < self.mixup_epochs[1]

    def mixup_beta(self, targets: Sequence[dict]) -> float | None:
        """The weight of each image's own pixels if this batch is mixed, else None."""
        if not self.mixup_on():
            return None
        image_ids = [int(target["image_id"]) for target in targets]
        rng = random.Random(_batch_seed(self.seed, self.epoch, image_ids, "mixup"))
        if rng.random() >= self.mixup_prob:
            return None
        return rng.uniform(*MIXUP_BETA)

    def __call__(self, batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
        images, targets = collate_fn(batch)
        beta = self.mixup_beta(targets)
        if beta is not None:
            images, targets = mix_up(images, targets, beta)
        size = self.pick_size(targets)
        if size is not None:
            images = interpolate(images, size=size, mode=self.mode)
        return images, targets


def mix_up(images: torch.Tensor, targets: Sequence[dict], beta: float) -> tuple[torch.Tensor, list[dict]]:
    """Image i -> beta * image_i + (1 - beta) * image_(i-1) (image 0 with the last); target i gets
    the boxes, per-box fields (labels, iscrowd, area) and masks [n, h, w] of both, its own first
    (all masks of a batch have one size: the pipeline's output). New dicts: the given targets
    are left as they are."""
    mixed = images.roll(shifts=1, dims=0) * (1.0 - beta) + images * beta
    shifted = list(targets[-1:]) + list(targets[:-1])
    out = []
    for own, other in zip(targets, shifted):
        target = dict(own)
        if (MASKS in own) != (MASKS in other):
            raise ValueError("MixUp: some targets have masks and others not")
        for key in ("boxes",) + PER_BOX_KEYS + (MASKS,):
            if isinstance(own.get(key), torch.Tensor) and isinstance(other.get(key), torch.Tensor):
                target[key] = torch.cat([own[key], other[key]])
        out.append(target)
    return mixed, out


def _batch_seed(seed: int, epoch: int, image_ids: Sequence[int], purpose: str = "") -> int:
    """A 64-bit seed from (seed, epoch, image ids, purpose); the same in every process."""
    key = f"{seed}/{epoch}/{','.join(map(str, image_ids))}{'/' + purpose if purpose else ''}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def train_collate(cfg: AugmentConfig = AugmentConfig(), seed: int = 0) -> MultiScaleCollate:
    """The official train collation: multi-scale over `cfg.scales` until `cfg.stop_epoch`, and
    MixUp in `cfg.mixup_epochs`."""
    return MultiScaleCollate(cfg.scales, stop_epoch=cfg.stop_epoch, seed=seed, mixup_epochs=cfg.mixup_epochs,
                             mixup_prob=cfg.mixup_prob)

