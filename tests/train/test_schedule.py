"""The learning-rate schedules against values computed by hand."""
from __future__ import annotations

import math

import pytest

from rtdetr.train.schedule import LRSchedule

# Tolerances: the expected values are written to 9 decimals.
ABS = 1e-9

# 4 warm-up steps, flat until epoch 4, cosine to 0.5 at epoch 10 - 2 = 8, then 0.5.
FLAT_COSINE = LRSchedule(kind="flatcosine", warmup_steps=4, warmup_shape="quadratic", epochs=10, flat_epochs=4,
                         no_aug_epochs=2, gamma=0.5)


@pytest.mark.parametrize("step, factor", [(0, 1 / 16), (1, 4 / 16), (2, 9 / 16), (3, 1.0), (50, 1.0)])
def test_quadratic_warm_up(step, factor):
    """(t/W)^2 with t = step + 1, the step about to be taken; the flat phase multiplies by 1."""
    assert FLAT_COSINE.factor(step, 0) == pytest.approx(factor, abs=ABS)


@pytest.mark.parametrize("epoch, progress, factor", [
    (0, 0.5, 1.0),
    (3, 0.99, 1.0),
    (4, 0.0, 1.0),              # the flat phase includes flat_epoch itself
    (5, 0.0, 0.926776695),      # t = 1/4: 0.5 + 0.25 (1 + cos(pi/4)) = 0.5 + 0.25 * 1.707106781
    (6, 0.0, 0.75),             # t = 1/2: 0.5 + 0.25 (1 + 0)
    (7, 0.5, 0.519030117),      # t = 7/8: 0.5 + 0.25 (1 + cos(7 pi/8)) = 0.5 + 0.25 * 0.076120467
    (8, 0.0, 0.5),              # epochs - no_aug_epochs: the floor
    (9, 0.9, 0.5),
])
def test_flat_cosine_after_warm_up(epoch, progress, factor):
    assert FLAT_COSINE.factor(1000, epoch, progress) == pytest.approx(factor, abs=ABS)


def test_flat_cosine_follows_the_iteration_within_the_epoch():
    """Epoch 5 of 4 iterations, iteration 2: position 5.5 epochs, t = 1.5/4 = 0.375."""
    expected = 0.5 + 0.25 * (1 + math.cos(math.pi * 0.375))  # 0.5 + 0.25 * 1.382683432 = 0.845670858
    assert expected == pytest.approx(0.845670858, abs=ABS)
    assert FLAT_COSINE.factor(1000, 5, 2 / 4) == pytest.approx(expected, abs=ABS)


def test_a_flat_phase_past_the_end_wins():
    """DEIM-N sets flat_epoch 7800 of 160 epochs, D-FINE 4e6: the lr never decays (checked first,
    as the official scheduler does)."""
    s = LRSchedule(kind="flatcosine", warmup_steps=0, epochs=160, flat_epochs=7800, no_aug_epochs=12, gamma=0.5)
    assert s.factor(10**6, 159, 0.99) == 1.0


def test_linear_warm_up_shape_with_flat_cosine():
    s = LRSchedule(kind="flatcosine", warmup_steps=4, warmup_shape="linear", epochs=10, flat_epochs=4)
    assert [s.factor(k, 0) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_the_existing_kinds_keep_their_values():
    multistep = LRSchedule(warmup_steps=4, milestones=(2,), gamma=0.1)
    assert [multistep.factor(k, 0) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert multistep.factor(100, 2) == pytest.approx(0.1, abs=ABS)
    cosine = LRSchedule(warmup_steps=0, kind="cosine", epochs=10, final_factor=0.05)
    assert cosine.factor(0, 5) == pytest.approx(0.525, abs=ABS)  # 0.05 + 0.95 * 0.5


def test_unknown_kind_and_shape_raise():
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        LRSchedule(kind="step").factor(0, 0)
    with pytest.raises(ValueError, match="unknown warm-up shape 'cubic'"):
        LRSchedule(warmup_shape="cubic").factor(0, 0)
