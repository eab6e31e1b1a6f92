"""D-FINE's distribution refinement pieces against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from rtdetr.models.nn.distribution import distance_to_box, integral, weighting_function

UP, REG_SCALE = torch.tensor([0.5]), torch.tensor([4.0])  # the official D-FINE settings


def test_weighting_function_by_hand():
    w = weighting_function(32, UP, REG_SCALE).double()
    # a*c + 1 = 3, so s = 3 ** (1/15) and s ** 15 = 3: W(1) = 1 - 3 = -2, W(31) = 3 - 1 = 2.
    s = 3 ** (1 / 15)
    assert w.shape == (33,)
    assert w[0] == -4 and w[32] == 4 and w[16] == 0
    assert math.isclose(w[1], -2, abs_tol=1e-6) and math.isclose(w[31], 2, abs_tol=1e-6)
    assert math.isclose(w[17], s - 1, rel_tol=1e-6) and math.isclose(w[15], 1 - s, rel_tol=1e-6)
    assert torch.all(w[1:] > w[:-1]) and torch.allclose(w, -w.flip(0))  # increasing, antisymmetric


def test_weighting_function_rejects_an_odd_number_of_bins():
    with pytest.raises(ValueError, match="even"):
        weighting_function(31, UP, REG_SCALE)


def test_integral_is_the_expected_offset():
    w = weighting_function(32, UP, REG_SCALE)
    corners = torch.full((2, 4 * 33), -1e4)
    corners[0, 16] = corners[0, 33 + 20] = corners[0, 66 + 0] = corners[0, 99 + 32] = 0.0  # one bin each
    corners[1] = 0.0                                                                      # uniform
    out = integral(corners, w)
    assert torch.allclose(out[0], torch.stack([w[16], w[20], w[0], w[32]]))
    assert torch.allclose(out[1], torch.zeros(4), atol=1e-6)  # antisymmetric bins average to 0


def test_distance_to_box_by_hand():
    ref = torch.tensor([[0.5, 0.4, 0.2, 0.1]])  # cx, cy, w, h
    assert torch.allclose(distance_to_box(ref, torch.zeros(1, 4), REG_SCALE), ref)  # no offset, same box
    # Left edge out by 4 (= c): x1 = 0.5 - (2 + 4) * 0.2 / 4 = 0.2; the others stay: x2 = 0.6.
    box = distance_to_box(ref, torch.tensor([[4.0, 0.0, 0.0, 0.0]]), REG_SCALE)
    assert torch.allclose(box, torch.tensor([[0.4, 0.4, 0.4, 0.1]]))
