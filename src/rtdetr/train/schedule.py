"""Learning-rate schedule: a warm-up over steps, then step decay, cosine, or flat-cosine over epochs.

A pure function of (step, epoch, progress): nothing to save but the counters, so resume is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KINDS = ("multistep", "cosine", "flatcosine")
WARMUP_SHAPES = ("linear", "quadratic")


@dataclass(frozen=True)
class LRSchedule:
    """`kind`:
      - "multistep" (RT-DETR / RT-DETRv2): x `gamma` at each milestone epoch;
      - "cosine": from 1 to `final_factor` over `epochs`;
      - "flatcosine" (D-FINE / DEIM / RT-DETRv4): 1 until `flat_epochs`, a half cosine down to
        `gamma` (the configs' `lr_gamma`) reached `no_aug_epochs` before the end, then `gamma`.
    `warmup_shape`: over the first `warmup_steps` steps the factor is multiplied by t/W
    ("linear") or (t/W)^2 ("quadratic", the flat-cosine configs'), t = step + 1 being the
    1-based number of the step about to be taken, W = `warmup_steps`.

    Positions within the schedule are counted in epochs, `epoch + progress`, so the flat-cosine
    phases follow each iteration as the official per-iteration scheduler does (it counts
    iterations, `epoch * iters_per_epoch + i`, which is the same point).
    """

    warmup_steps: int = 2000
    kind: str = "multistep"
    milestones: tuple[int, ...] = field(default=(1000,))
    gamma: float = 0.1
    epochs: int = 72
    final_factor: float = 0.05
    warmup_shape: str = "linear"
    flat_epochs: float = 0.0
    no_aug_epochs: float = 0.0

    def warmup(self, step: int) -> float:
        """The warm-up multiplier at global `step` (0-based); 1 from step `warmup_steps - 1` on."""
        if self.warmup_steps <= 0:
            return 1.0
        ratio = min(1.0, (step + 1) / self.warmup_steps)
        if self.warmup_shape == "linear":
            return ratio
        if self.warmup_shape == "quadratic":
            return ratio * ratio
        raise ValueError(f"unknown warm-up shape {self.warmup_shape!r}; use {' or '.join(map(repr, WARMUP_SHAPES))}")

    def decay(self, epoch: int, progress: float = 0.0) -> float:
        """The multiplier after warm-up during `epoch`, `progress` in [0, 1) through it."""
        if self.kind == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "cosine":
            t = min(1.0, (epoch + progress) / max(1, self.epochs))
            return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "flatcosine":
            x = epoch + progress
            end = self.epochs - self.no_aug_epochs  # the floor is reached here
            if x <= self.flat_epochs:  # checked first, as officially: a flat phase past the end wins
                return 1.0
            if x >= end:
                return self.gamma
            t = (x - self.flat_epochs) / (end - self.flat_epochs)
            return self.gamma + (1 - self.gamma) * 0.5 * (1 + math.cos(math.pi * t))
        raise ValueError(f"unknown lr schedule {self.kind!r}; use {', '.join(map(repr, KINDS))}")

    def factor(self, step: int, epoch: int, progress: float = 0.0) -> float:
        """Multiplier of each group's base lr at global `step` (0-based) during `epoch`.

        `progress` in [0, 1) is the fraction of the epoch done (for smooth cosines).
        """
        return self.warmup(step) * self.decay(epoch, progress)


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to its `initial_lr` times `factor`."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
