"""A data order that is a pure function of (seed, epoch), sharded over processes, and able to
start in the middle of an epoch: what exact resume and DDP need together."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices of one epoch for process `rank` of `world_size`.

    The epoch's permutation is drawn from a generator seeded with seed + epoch, padded by
    repetition to a multiple of world_size, and dealt round-robin. `set_epoch(epoch, skip)`
    starts the next pass `skip` indices into this process's share.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if length <= 0:
            raise ValueError("cannot sample from an empty data set")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def epoch_indices(self) -> list[int]:
        """This process's whole share of the epoch (before skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_process = -(-self.length // self.world_size)
        padded = (order * (1 + per_process * self.world_size // self.length))[: per_process * self.world_size]
        return padded[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.skip:])

    def __len__(self) -> int:
        return len(self.epoch_indices()) - self.skip
