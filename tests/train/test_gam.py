"""GAM's weight update against hand-computed cases, and the distillation loss against a hand
computation (the formulas: `rtdetr.train.gam`, `rtdetr.train.distill`)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rtdetr.train.distill import Distillation, cosine_distill_loss, make_projector
from rtdetr.train.gam import GAMSettings, gam_update

S = GAMSettings(rho=11.0, delta=1.0, default_weight=20.0, stop_epoch=120)  # RT-DETRv4-S's


@pytest.mark.parametrize("share, weight, expected, why", [
    # Inside [10, 12] %, edges included: unchanged.
    (11.5, 5.0, 5.0, "in band"), (10.0, 5.0, 5.0, "in band"), (12.0, 5.0, 5.0, "in band"),
    # Below: towards 12 %. odds ratio 0.12 * 0.92 / (0.08 * 0.88) = 0.1104 / 0.0704 = 1.5681818...
    (8.0, 5.0, 5.0 * 0.1104 / 0.0704, "raised"),
    # Far below (S's ~1 % at initialisation): 0.12 * 0.99 / (0.01 * 0.88) = 13.5, clamped to 10x.
    (1.0, 5.0, 50.0, "raised"),
    # Above: towards 10 %. 0.10 * 0.80 / (0.20 * 0.90) = 0.4444...
    (20.0, 5.0, 5.0 * 0.08 / 0.18, "lowered"),
    # Far above: 0.1 * 0.1 / (0.9 * 0.9) = 0.0123 -> the 0.1 floor (= the lambda / 10 clamp): 0.5.
    (90.0, 5.0, 0.5, "lowered"),
    # No AIFI gradient: the default weight.
    (0.0, 5.0, 20.0, "default (no AIFI gradient)"), (float("nan"), 5.0, 20.0, "default (no AIFI gradient)"),
    # A weight at or below 1e-6 is not scaled (the official guard).
    (1.0, 1e-7, 1e-7, "unchanged"),
])
def test_update_matches_hand_computed_cases(share, weight, expected, why):
    new, reason = gam_update(weight, share, epoch=3, gam=S)
    assert new == pytest.approx(expected, rel=1e-12) and reason == why


def test_stage_two_uses_the_default_weight():
    # The official check is `epoch >= stop_epoch` on the epoch just trained.
    assert gam_update(5.0, 1.0, epoch=119, gam=S) == (50.0, "raised")
    assert gam_update(5.0, 1.0, epoch=120, gam=S) == (20.0, "default (stage 2)")
    assert gam_update(5.0, 11.0, epoch=121, gam=S) == (20.0, "default (stage 2)")
    never = GAMSettings(11.0, 1.0, 20.0, stop_epoch=None)
    assert gam_update(5.0, 11.0, epoch=10_000, gam=never) == (5.0, "in band")


def test_bad_band_is_refused():
    for rho, delta in ((0.0, 0.0), (5.0, 5.0), (99.0, 2.0), (5.0, -1.0)):
        with pytest.raises(ValueError, match="GAM band"):
            GAMSettings(rho, delta, 20.0)


def test_epoch_mean_skips_overflowed_steps_and_feeds_the_update():
    d = Distillation(nn.Identity(), weight=5.0, gam=S)
    for share in (6.0, float("inf"), 10.0, float("nan")):  # fp16 overflow steps give inf / nan
        d.after_step({"grad_share/aifi": share})
    cols = d.end_epoch(0)
    assert cols["distill_share"] == 8.0 and cols["distill_weight"] == 5.0
    assert cols["distill_weight_next"] == pytest.approx(5.0 * 0.1104 / 0.0704)
    assert d.weight == cols["distill_weight_next"] and (d.share_sum, d.share_steps) == (0.0, 0)
    # The state (weight, running share, history) round-trips.
    d.after_step({"grad_share/aifi": 3.0})
    e = Distillation(nn.Identity(), weight=1.0, gam=S)
    e.load_state_dict(d.state_dict())
    assert e.state_dict() == d.state_dict()
    # Static: the weight stays, the share is still reported.
    static = Distillation(nn.Identity(), weight=2.0, gam=None)
    static.after_step({"grad_share/aifi": 1.5})
    assert static.end_epoch(0) == {"distill_share": 1.5, "distill_weight": 2.0, "distill_weight_next": 2.0}


def test_cosine_loss_by_hand():
    projector = make_projector(2, 2)
    with torch.no_grad():
        projector[0].weight.copy_(torch.eye(2))
        projector[0].bias.zero_()
    # Two positions of a 1 x 2 map: s = (1, 0) vs t = (0, 1): cosine 0; s = (1, 1) vs t = (2, 2): 1.
    student = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # [1, C=2, h=1, w=2]
    teacher = torch.tensor([[[[0.0, 2.0]], [[1.0, 2.0]]]])
    assert cosine_distill_loss(student, teacher, projector).item() == pytest.approx(0.5)
    # The projector maps C -> D and gets the gradient; official keys "0.weight", "0.bias".
    p = make_projector(3, 5)
    assert {k: tuple(v.shape) for k, v in p.state_dict().items()} == {"0.weight": (5, 3), "0.bias": (5,)}
