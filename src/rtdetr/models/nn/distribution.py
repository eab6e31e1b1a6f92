"""D-FINE's fine-grained distribution refinement: box edges as distributions over fixed offsets.

Each decoder layer predicts, for every edge (left, top, right, bottom) of every query's box,
logits over `reg_max + 1` bins. The bins stand for non-uniform offsets `W(n)` (`weighting_function`):
dense near 0, sparse towards +-2*up*reg_scale. An edge's offset is the expectation of W under
the softmax of its logits (`integral`), and the box is decoded from a reference box by moving
each edge by that offset, in units of the reference's size / reg_scale (`distance_to_box`).
Used by the D-FINE / DEIM / RT-DETRv4 decoder (`DecoderConfig.refinement = "distribution"`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from rtdetr.models.nn.common import MLP


def weighting_function(reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """The `reg_max + 1` bin offsets W(0..N), N = reg_max (even):

        a = |up|, c = |reg_scale|, s = (a*c + 1) ** (2 / (N - 2))
        W(0) = -2ac,  W(n) = 1 - s**(N/2 - n) for 0 < n < N/2,  W(N/2) = 0,
        W(n) = s**(n - N/2) - 1 for N/2 < n < N,  W(N) = 2ac

    up, reg_scale: tensors of shape [1] (the official modules keep them as parameters or
    buffers). Returns [N + 1], increasing, antisymmetric around W(N/2) = 0.
    """
    if reg_max % 2 or reg_max < 4:
        raise ValueError(f"reg_max must be an even number of at least 4, got {reg_max}")
    bound = up.abs() * reg_scale.abs()
    step = (bound + 1) ** (2 / (reg_max - 2))
    half = reg_max // 2
    left = [1 - step ** i for i in range(half - 1, 0, -1)]
    right = [step ** i - 1 for i in range(1, half)]
    return torch.cat([-2 * bound, *left, torch.zeros_like(bound), *right, 2 * bound])


def integral(corners: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """corners [..., 4 * (N + 1)] logits (edges l, t, r, b, each over N + 1 bins), weights [N + 1]
    -> the expected offset of each edge [..., 4]."""
    bins = weights.shape[0]
    probs = F.softmax(corners.reshape(*corners.shape[:-1], 4, bins), dim=-1)
    return probs @ weights.to(probs.dtype)


def distance_to_box(reference: torch.Tensor, distance: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """reference [..., 4] cx, cy, w, h; distance [..., 4] edge offsets (l, t, r, b) -> boxes
    [..., 4] cx, cy, w, h. Each edge of the reference moves outwards by offset * size / |reg_scale|
    (an offset of 0 keeps the reference box: x1 = cx - (c/2 + D_l) * w / c)."""
    c = reg_scale.abs()
    cx, cy, w, h = reference.unbind(-1)
    x1 = cx - (0.5 * c + distance[..., 0]) * (w / c)
    y1 = cy - (0.5 * c + distance[..., 1]) * (h / c)
    x2 = cx + (0.5 * c + distance[..., 2]) * (w / c)
    y2 = cy + (0.5 * c + distance[..., 3]) * (h / c)
    return box_convert(torch.stack([x1, y1, x2, y2], -1), in_fmt="xyxy", out_fmt="cxcywh")


class QualityHead(nn.Module):
    """D-FINE's localisation quality estimator (LQE): a score from how peaked each edge's
    distribution is, added to every class logit.

    Features per query: for each of the 4 edges, the `k` largest bin probabilities and their
    mean (4 * (k + 1) values), through an MLP to one scalar. Keys `reg_conf.layers.{i}.*`.
    corners [B, Q, 4 * (reg_max + 1)] -> [B, Q, 1].
    """

    def __init__(self, reg_max: int, k: int = 4, hidden_dim: int = 64, num_layers: int = 2, act: str = "relu"):
        super().__init__()
        self.k = k
        self.bins = reg_max + 1
        self.reg_conf = MLP(4 * (k + 1), hidden_dim, 1, num_layers, act=act)
        nn.init.zeros_(self.reg_conf.layers[-1].weight)
        nn.init.zeros_(self.reg_conf.layers[-1].bias)

    def forward(self, corners: torch.Tensor) -> torch.Tensor:
        b, q, _ = corners.shape
        prob = F.softmax(corners.reshape(b, q, 4, self.bins), dim=-1)
        top = prob.topk(self.k, dim=-1).values
        stat = torch.cat([top, top.mean(dim=-1, keepdim=True)], dim=-1)
        return self.reg_conf(stat.reshape(b, q, -1))
