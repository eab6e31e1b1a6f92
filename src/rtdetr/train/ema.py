"""Exponential moving average of the model weights (used for evaluation and `best.pt`)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


class ModelEMA:
    """`ema = d * ema + (1 - d) * model` after every optimizer step, on every float entry of the
    state dict (buffers too), with the decay ramping up: d(n) = decay * (1 - exp(-n / warmups)).

    `decay` is read at every update, so setting it changes the averaging from the next update on
    (the EMA restarts of `TrainRecipe.ema_restart_decay`); it is part of the state dict."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: int = 2000):
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.warmups = warmups
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        return self.decay * (1 - math.exp(-updates / self.warmups))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        current = unwrap(model).state_dict()
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[key].detach(), alpha=1 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Weights and counter; the decay too where saved (checkpoints before it keep the current one)."""
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
        self.decay = state.get("decay", self.decay)
