"""Per-image random state for augmentation: a pure function of (seed, epoch, image id).

Whichever worker process loads an image, and however many images came before, the image
gets the same augmentation; so a resumed run sees exactly the data the interrupted one
would have seen.
"""
from __future__ import annotations

import hashlib
import random

import torch


def derive_seed(*parts: int) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SeededTransforms:
    """Wraps `transforms` (with an `epoch` attribute, e.g. `rtdetr.data.transforms.Compose`)."""

    def __init__(self, transforms, seed: int):
        self.transforms = transforms
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.transforms.set_epoch(epoch)

    def __call__(self, image, target):
        s = derive_seed(self.seed, self.transforms.epoch, int(target["image_id"]))
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            try:
                return self.transforms(image, target)
            finally:
                random.setstate(state)
