"""Learning-rate schedule: linear warm-up over steps, then step decay or cosine over epochs.

A pure function of (step, epoch): nothing to save but the counters, so resume is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LRSchedule:
    """`kind`: "multistep" (official: x gamma at each milestone epoch) or "cosine" (to `final_factor`)."""

    warmup_steps: int = 2000
    kind: str = "multistep"
    milestones: tuple[int, ...] = field(default=(1000,))
    gamma: float = 0.1
    epochs: int = 72
    final_factor: float = 0.05

    def factor(self, step: int, epoch: int, progress: float = 0.0) -> float:
        """Multiplier of each group's base lr at global `step` (0-based) during `epoch`.

        `progress` in [0, 1) is the fraction of the epoch done (for a smooth cosine).
        """
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "multistep":
            decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        elif self.kind == "cosine":
            t = min(1.0, (epoch + progress) / max(1, self.epochs))
            decay = self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            raise ValueError(f"unknown lr schedule {self.kind!r}; use 'multistep' or 'cosine'")
        return warm * decay


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to its `initial_lr` times `factor`."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
