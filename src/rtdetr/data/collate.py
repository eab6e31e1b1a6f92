"""Batch collation, with the official RT-DETR multi-scale training.

A batch item is what the transforms of `rtdetr.data.transforms` return:
`(image float32 [3, h, w], target dict)`, all images of one size. A batch is
`(images float32 [B, 3, h, w], [target, ...])`.

Multi-scale (the official `BatchImageCollateFunction`): until `stop_epoch`, each batch
is resized as a whole to one square size picked at random from `scales`, with
`torch.nn.functional.interpolate` in mode "nearest" (the official default). Boxes are
normalised, so they stay as they are.

The pick is a pure function of (seed, epoch, the batch's image ids): it does not depend
on which DataLoader worker builds the batch nor on how many batches came before, so a
run resumed in the middle of an epoch (with the same sampler order) gets the same sizes.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

import torch
from torch.nn.functional import interpolate

from rtdetr.data.transforms import AugmentConfig, SharedEpoch


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

    Every target needs an `image_id` (the key of the pick). `set_epoch(epoch)` reaches
    DataLoader workers (see `rtdetr.data.transforms.SharedEpoch`).
    """

    def __init__(
        self,
        scales: Sequence[int | tuple[int, int]] | None,
        stop_epoch: int | None = None,
        seed: int = 0,
        mode: str = "nearest",
    ) -> None:
        self.scales = list(scales or [])
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.mode = mode
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

    def __call__(self, batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
        images, targets = collate_fn(batch)
        size = self.pick_size(targets)
        if size is not None:
            images = interpolate(images, size=size, mode=self.mode)
        return images, targets


def _batch_seed(seed: int, epoch: int, image_ids: Sequence[int]) -> int:
    """A 64-bit seed from (seed, epoch, image ids); the same in every process."""
    key = f"{seed}/{epoch}/{','.join(map(str, image_ids))}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def train_collate(cfg: AugmentConfig = AugmentConfig(), seed: int = 0) -> MultiScaleCollate:
    """The official train collation: multi-scale over `cfg.scales` until `cfg.stop_epoch`."""
    return MultiScaleCollate(cfg.scales, stop_epoch=cfg.stop_epoch, seed=seed)

