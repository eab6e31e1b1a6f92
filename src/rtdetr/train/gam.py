"""Gradient-guided Adaptive Modulation (RT-DETRv4): the distillation weight lambda is set anew
after each epoch so that AIFI's share of the gradient stays in the band [rho - delta, rho + delta].

The share (in %) is the L1 norm of the AIFI layer's gradients over the L1 norm of every gradient
of the run (backbone, encoder, decoder, projector), measured after each optimiser step's backward
(`step.grad_norms`, identical on every process) and averaged over the epoch. The update, as the
official code computes it, for the epoch's mean share s and the band's near edge t:

    s < 1e-6 (no AIFI gradient)        -> lambda = default_weight
    epoch >= stop_epoch (stage 2)      -> lambda = default_weight
    s inside the band                  -> unchanged
    otherwise                          -> lambda * max(0.1, t (1 - s) / (s (1 - t)))   (an odds ratio,
                                          s and t as fractions), clamped to [lambda / 10, 10 lambda]

A lambda at or below 1e-6 is not scaled (the official guard). The weight found after epoch e is
used in epoch e + 1; the first epoch uses the initial weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GAMSettings:
    """rho, delta: the band, in % of the gradient; default_weight: lambda where the band cannot
    steer (no AIFI gradient, and from `stop_epoch` on, the recipe's no-multi-scale stage 2;
    None: never)."""

    rho: float
    delta: float
    default_weight: float
    stop_epoch: int | None = None

    def __post_init__(self):
        if not 0 < self.rho < 100 or not 0 <= self.delta < self.rho or self.rho + self.delta >= 100:
            raise ValueError(f"GAM band rho {self.rho} +- delta {self.delta}: need 0 <= delta < rho and "
                             f"rho + delta < 100 (percent of the gradient)")


def gam_update(weight: float, share: float, epoch: int, gam: GAMSettings) -> tuple[float, str]:
    """The weight for the epoch after `epoch` (0-based) whose mean AIFI share was `share` (%),
    and why: "default (no AIFI gradient)", "default (stage 2)", "in band", "raised", "lowered",
    or "unchanged" (weight too small to scale)."""
    if not math.isfinite(share) or share < 1e-6:
        return gam.default_weight, "default (no AIFI gradient)"
    if gam.stop_epoch is not None and epoch >= gam.stop_epoch:
        return gam.default_weight, "default (stage 2)"
    low, high = gam.rho - gam.delta, gam.rho + gam.delta
    if low <= share <= high:
        return weight, "in band"
    if weight <= 1e-6:
        return weight, "unchanged"
    p, target = share / 100.0, (high if share < low else low) / 100.0
    ratio = max(0.1, target * (1.0 - p) / (p * (1.0 - target)))
    new = min(max(weight * ratio, weight / 10.0), weight * 10.0)
    return new, "raised" if share < low else "lowered"
