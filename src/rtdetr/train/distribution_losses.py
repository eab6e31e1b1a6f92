"""D-FINE's losses on the box-edge distributions of a decoder layer (the criterion's "local" loss).

A distribution decoder layer predicts `corners` [B, Q, 4 * (N + 1)]: for every query and edge
(left, top, right, bottom), logits over the N + 1 bins of the offsets W(0..N)
(`rtdetr.models.nn.distribution.weighting_function`). Two losses train them:

- Fine-grained localisation (FGL, `fgl_loss`): each matched edge's ground-truth offset d lies
  between two neighbouring bins, W(k) <= d < W(k + 1); the edge's distribution is pushed onto
  those two bins by cross-entropy, weighted by how close d is to each (`fgl_targets`), and by
  the IoU of the matched box.
- Decoupled distillation focal (DDF, `ddf_loss`): every edge of every query is pulled towards
  the last decoder layer's (the teacher's) distribution, a temperature-softened KL divergence,
  with matched and unmatched queries averaged apart and then mixed (`DDFBalance`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Keeps an edge distance finite for a reference box of zero size.
SIZE_EPS = 1e-16
# An edge beyond the last bin targets bin N alone; its bin index is stored as N - this, so that
# floor(index) = N - 1 and floor(index) + 1 = N.
LAST_BIN_MARGIN = 0.1


class FGLTargets(NamedTuple):
    """Per matched (query, edge), shapes [M, 4]: `bins` the left bin k as a float (0 <= k < N),
    `weight_right` / `weight_left` the shares of bins k + 1 and k (summing to 1)."""
    bins: Tensor
    weight_right: Tensor
    weight_left: Tensor


class DDFBalance(NamedTuple):
    """The mixing weights of DDF's two means: sqrt(8 * count / B) of the matched and the
    unmatched (query, edge) pairs of a level (0-dim tensors)."""
    positive: Tensor
    negative: Tensor


def edge_distances(reference: Tensor, gt_boxes: Tensor, reg_scale: Tensor) -> Tensor:
    """reference [M, 4] cx, cy, w, h (the box the layer decodes from); gt_boxes [M, 4] cx, cy,
    w, h -> [M, 4] each ground-truth edge's offset d in bin units, the inverse of
    `distance_to_box`: x1_gt = cx - (c/2 + d_l) * w / c, i.e. d_l = (cx - x1_gt) / (w / c) - c/2,
    with c = |reg_scale|; likewise d_t, d_r, d_b."""
    c = reg_scale.abs()
    cx, cy, w, h = reference.unbind(-1)
    gcx, gcy, gw, gh = gt_boxes.unbind(-1)
    unit_x, unit_y = w / c + SIZE_EPS, h / c + SIZE_EPS
    left = (cx - (gcx - 0.5 * gw)) / unit_x - 0.5 * c
    top = (cy - (gcy - 0.5 * gh)) / unit_y - 0.5 * c
    right = ((gcx + 0.5 * gw) - cx) / unit_x - 0.5 * c
    bottom = ((gcy + 0.5 * gh) - cy) / unit_y - 0.5 * c
    return torch.stack([left, top, right, bottom], -1)


@torch.no_grad()
def fgl_targets(reference: Tensor, gt_boxes: Tensor, weights: Tensor, reg_scale: Tensor) -> FGLTargets:
    """The two-bin targets of every matched edge.

    reference, gt_boxes [M, 4] cx, cy, w, h; weights [N + 1] the bin offsets W (increasing).
    k = #{n : W(n) <= d} - 1. Inside (0 <= k < N): weight_right = (d - W(k)) / (W(k+1) - W(k)).
    Below W(0): bin 0 alone. At or beyond W(N): bin N alone (bins = N - 0.1, weight_right 1).
    """
    d = edge_distances(reference, gt_boxes, reg_scale)
    weights = weights.to(d)
    n = weights.shape[0] - 1
    k = (weights <= d[..., None]).sum(-1) - 1
    inside = (k >= 0) & (k < n)
    k_in = k.clamp(0, n - 1)
    to_left = (d - weights[k_in]).abs()
    to_right = (weights[k_in + 1] - d).abs()
    share_right = to_left / (to_left + to_right)
    below, beyond = k < 0, k >= n
    weight_right = torch.where(inside, share_right, beyond.to(d.dtype))
    weight_left = torch.where(inside, 1 - share_right, below.to(d.dtype))
    bins = torch.where(beyond, torch.full_like(d, n - LAST_BIN_MARGIN), k.clamp(min=0).to(d.dtype))
    return FGLTargets(bins, weight_right, weight_left)


def fgl_loss(corners: Tensor, targets: FGLTargets, iou: Tensor, num_boxes: float) -> Tensor:
    """corners [M, 4 * (N + 1)]: the matched queries' logits; targets from `fgl_targets` ([M, 4]);
    iou [M] the IoU of each matched box with its object (a weight, not differentiated).

    sum over pairs and edges of iou * (w_l * CE(edge, k) + w_r * CE(edge, k + 1)), / num_boxes.
    """
    bins = corners.shape[-1] // 4
    logits = corners.reshape(-1, bins)
    left = targets.bins.reshape(-1).long()
    loss = (F.cross_entropy(logits, left, reduction="none") * targets.weight_left.reshape(-1)
            + F.cross_entropy(logits, left + 1, reduction="none") * targets.weight_right.reshape(-1))
    loss = loss * iou.detach().repeat_interleave(4).to(loss.dtype)
    return loss.sum() / num_boxes


def ddf_balance(is_matched: Tensor) -> DDFBalance:
    """is_matched [B, Q] bool -> the mixing weights of `ddf_loss`: sqrt(8 * pairs / B) for the
    matched and the unmatched (query, edge) pairs (4 edges per query). The 8 / B makes them
    independent of the batch size per process."""
    scale = 8 / is_matched.shape[0]
    positive = is_matched.sum() * 4
    negative = is_matched.numel() * 4 - positive
    return DDFBalance((positive * scale) ** 0.5, (negative * scale) ** 0.5)


def ddf_loss(corners: Tensor, teacher_corners: Tensor, teacher_logits: Tensor, batch_idx: Tensor,
             query_idx: Tensor, iou: Tensor, temperature: float,
             balance: DDFBalance | None = None) -> tuple[Tensor, DDFBalance]:
    """corners, teacher_corners [B, Q, 4 * (N + 1)]; teacher_logits [B, Q, K]; batch_idx,
    query_idx [M] the matched queries (each at most once); iou [M] their IoUs.

    Per (query, edge): T^2 * KL(softmax(teacher / T) || softmax(corners / T)), weighted by the
    IoU for matched queries and by the teacher's top class probability otherwise (both fixed).
    The matched and unmatched pairs are averaged apart (an empty side gives 0) and mixed by
    `balance` (default: `ddf_balance` of this level's matches).
    Returns (loss, the balance used).
    """
    bins = corners.shape[-1] // 4
    teacher_corners, teacher_logits = teacher_corners.detach(), teacher_logits.detach()
    is_matched = torch.zeros(teacher_logits.shape[:2], dtype=torch.bool, device=corners.device)
    is_matched[batch_idx, query_idx] = True
    weight = teacher_logits.sigmoid().max(-1).values
    weight[batch_idx, query_idx] = iou.detach().to(weight.dtype)
    weight = weight.reshape(-1).repeat_interleave(4)
    matched = is_matched.reshape(-1).repeat_interleave(4)

    log_student = F.log_softmax(corners.reshape(-1, bins) / temperature, dim=1)
    teacher = F.softmax(teacher_corners.reshape(-1, bins) / temperature, dim=1)
    kl = F.kl_div(log_student, teacher, reduction="none").sum(-1)
    loss = weight * temperature ** 2 * kl

    if balance is None:
        balance = ddf_balance(is_matched)
    positive = loss[matched].mean() if matched.any() else 0
    negative = loss[~matched].mean() if (~matched).any() else 0
    mixed = (positive * balance.positive + negative * balance.negative) / (balance.positive + balance.negative)
    return mixed, balance
