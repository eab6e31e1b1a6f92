"""One optimiser step: forward, losses (the criterion's and any extra terms), backward over the
micro-batches, clipping, the optimiser and EMA updates, and the gradient norms it logs."""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Protocol

import torch

from rtdetr.core import distributed as dist
from rtdetr.eval.validate import autocast
from rtdetr.train.ema import unwrap

class ExtraLoss(Protocol):
    """An extra loss term of a run: `train(..., extra_losses=[fn])` or `Trainer(cfg, extra_losses=[fn])`.

    `fn(ctx)` is called once per micro-batch, after the criterion, with a context of:
        ctx.model          the detector being trained (not DDP-wrapped)
        ctx.images         the batch, [B, 3, H, W] on the training device
        ctx.targets        per image: 'labels' [n], 'boxes' [n, 4] (cx, cy, w, h, normalised)
        ctx.outputs        the detector's training outputs, in float32 (see `criterion`)
        ctx.losses         a copy of the criterion's weighted terms of this micro-batch
        ctx.epoch          the 0-based epoch
        ctx.step           the optimiser steps done before this one
        ctx.extra_modules  the run's `extra_modules` (an nn.ModuleDict), optimised and
                           checkpointed with the model
    and returns {name: scalar tensor}, terms already weighted: they are added to the loss that
    is backpropagated, and logged as the criterion's terms are (in the logged `loss`, and as
    TensorBoard `train/<name>`). Names start with 'loss_' and do not repeat a criterion term
    (else a one-line ValueError); {} adds nothing.

    An extra loss may also have (all optional, found by name; `rtdetr.train.distill.Distillation`):
        after_step(logs)      after each optimiser step, with the step's logs averaged over the
                              processes (e.g. `grad_share/aifi`)
        end_epoch(epoch)      after each epoch, in every process; returns {column: float} for
                              TensorBoard (`epoch/<column>`) and, for the names in its
                              `columns` attribute, results.csv
        state_dict(), load_state_dict(state)   kept in last.pt, restored on resume
    """

    def __call__(self, ctx: SimpleNamespace) -> dict[str, torch.Tensor]: ...


class StepMixin:
    """The optimiser step of `Trainer` (which sets the attributes used here)."""

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.amp_dtype):
            outputs = self.net(images, targets=targets)
        outputs = outputs_to_float(outputs)
        losses = self.criterion(outputs, targets)
        if self.extra_losses:
            ctx = SimpleNamespace(model=self.model, images=images, targets=targets, outputs=outputs,
                                  losses=dict(losses), epoch=self.state["epoch"], step=self.state["global_step"],
                                  extra_modules=self.extra_modules)
            for fn in self.extra_losses:
                terms = fn(ctx)
                _check_extra_terms(fn, terms, losses)
                losses.update(terms)
        return losses

    def train_step(self, micro_batches: list[tuple[torch.Tensor, list[dict]]]) -> dict[str, float]:
        """Forward/backward over the micro-batches, then clip, step, EMA; returns the logs."""
        logs: dict[str, float] = {}
        for images, targets in micro_batches:
            images = images.to(self.device, non_blocking=True)
            targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            losses = self.compute_losses(images, targets)
            loss = sum(losses.values()) / len(micro_batches)
            if not torch.isfinite(loss):
                raise FloatingPointError(non_finite_message(losses, loss, self.state["global_step"]))
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            for k, v in losses.items():
                logs[k] = logs.get(k, 0.0) + v.item() / len(micro_batches)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        dist.average_gradients([p for p in self.extra_modules.parameters() if p.requires_grad])
        logs.update(self.grad_norms())
        if self.cfg.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self._trainable(), self.cfg.clip_max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        logs["loss"] = sum(v for k, v in logs.items() if k.startswith("loss_"))
        return logs

    def _trainable(self) -> list[torch.Tensor]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + [p for p in self.extra_modules.parameters() if p.requires_grad]

    def grad_norms(self) -> dict[str, float]:
        """The L2 gradient norm of each part (backbone, AIFI (the encoder's attention), CCFF (the
        rest of the encoder), decoder) and `grad_share/aifi`: AIFI's share, in %, of the L1 norm of
        every gradient of the run (extra modules included), which RT-DETRv4's GAM steers
        (`rtdetr.train.gam`). Parts are found by role, not by parameter names; one host sync."""
        m = unwrap(self.model)
        aifi = {id(p) for p in m.encoder.encoder.parameters()}
        parts = {
            "backbone": list(m.backbone.parameters()),
            "aifi": list(m.encoder.encoder.parameters()),
            "ccff": [p for p in m.encoder.parameters() if id(p) not in aifi],
            "decoder": list(m.decoder.parameters()),
        }
        zero = torch.zeros((), device=self.device)
        values = []
        for params in parts.values():
            grads = [p.grad for p in params if p.grad is not None]
            values.append(torch.nn.utils.get_total_norm(grads, 2.0).float() if grads else zero)
        aifi_grads = [p.grad for p in parts["aifi"] if p.grad is not None]
        others = [p.grad for p in self._trainable() if p.grad is not None and id(p) not in aifi]
        if aifi_grads:
            # abs().sum() in float64: float32 L1 vector norms of large tensors drift by ~5e-4.
            def l1(grads):
                return torch.stack([g.abs().sum(dtype=torch.float64) for g in grads]).sum() if grads else 0.0
            aifi_l1 = l1(aifi_grads)
            values.append((100.0 * aifi_l1 / (aifi_l1 + l1(others))).float())
        else:
            values.append(zero)
        numbers = torch.stack(values).tolist()
        out = {f"grad_norm/{name}": v for name, v in zip(parts, numbers)}
        out["grad_share/aifi"] = numbers[-1]
        return out


def non_finite_message(losses: dict[str, torch.Tensor], loss: torch.Tensor, step: int) -> str:
    """One line: the non-finite terms first, then the step, the loss and every term."""
    values = {k: v.item() for k, v in losses.items()}
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    what = f"non-finite loss term(s) {', '.join(bad)}" if bad else f"the sum of the loss terms is {loss.item()}"
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return f"{what} at step {step} (loss {loss.item()}; terms: {terms})"


def _check_extra_terms(fn: ExtraLoss, terms, losses: dict) -> None:
    """An extra loss's result must be new 'loss_' terms (else they would be summed but not logged)."""
    name = getattr(fn, "__name__", repr(fn))
    if not isinstance(terms, dict):
        raise TypeError(f"extra loss {name} returned a {type(terms).__name__}, not a dict of loss terms")
    for key in terms:
        if not str(key).startswith("loss_") or key in losses:
            why = "repeats a criterion term" if key in losses else "does not start with 'loss_'"
            raise ValueError(f"extra loss {name} returned term {key!r}, which {why}")


def outputs_to_float(outputs):
    """Every floating tensor in a (nested) model output as float32 (autocast outputs, before the losses)."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: outputs_to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [outputs_to_float(v) for v in outputs]
    return outputs
