"""Mask losses and mask matching costs, computed on sampled points, never on dense masks.

A query's mask logits are the dot products of its embedding with the pixel features
(`rtdetr.models.nn.mask_head`). Only the matched queries' logit maps are formed ([m, h, w] per
image, at 1/4 resolution), never all queries' [B, Q, H, W]; the matcher needs all queries, so it
samples the features at shared points instead ([Q, C] x [C, P]: bilinear sampling is linear, so
this equals sampling the logit maps). Ground-truth masks are read at the points (nearest), never
resized or copied as a whole.

Masks are learnt inside their object's box (D-FINE-seg's box-cropped losses): every point lies
in the ground-truth box of its pair, so a query learns the shape within its box and never has to
learn to silence the rest of the picture, which the box already says (a CNN's pixel features
carry little absolute position; uncropped masks learnt far slower on the synthetic shapes).
Predictions are cropped to their boxes accordingly (`rtdetr.models.postprocess.paste_masks`).

- Loss (points as PointRend / Mask2Former / RF-DETR-Seg): per matched (query, object) pair, P
  points in the object's box: `importance` of them the most uncertain (|logit| smallest) of
  `oversample` * P random candidates, the rest uniform random. loss_mask is the sigmoid BCE, mean
  over the points; loss_dice the Dice loss 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1); both
  summed over the pairs and divided by the object count.
- Costs (the matcher's): per object, `COST_POINTS` uniform points in its box, shared by all
  queries; the same BCE (mean over points) and Dice, for every pair at once.

Points are (x, y) in [0, 1] of the image; features and logit maps are sampled bilinearly
(`grid_sample`, align_corners=False, border cells repeated) and ground-truth masks at the pixel
each point falls in, so a ground-truth mask of any resolution aligned with the network input
works (multi-scale batches resize the images, not the masks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_POINTS = 256  # points per mask at least: tiny inputs still get a usable sample
COST_POINTS = 256  # points per object for the matching costs (all Q queries are evaluated there)


def num_points(height: int, width: int) -> int:
    """Points per mask for pixel features of height x width: one per 4x4 cells (RF-DETR-Seg's
    H*W/16), at least MIN_POINTS."""
    return max(MIN_POINTS, (int(height) * int(width)) // 16)


def sample(maps: Tensor, coords: Tensor) -> Tensor:
    """maps [N, C, h, w], coords [N, P, 2] (x, y in [0, 1]) -> [N, C, P], bilinear. Within half
    a cell of the border the border cells are repeated (zero padding would pull the logits
    there towards 0, i.e. fake uncertainty, and blur the targets)."""
    grid = coords.to(maps.dtype).mul(2).sub(1).unsqueeze(2)  # [N, P, 1, 2] in [-1, 1]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]


def point_targets(masks: Tensor, coords: Tensor) -> Tensor:
    """Ground-truth masks [m, H, W] (bool / uint8 / float), coords [m, P, 2] -> [m, P] float:
    the value of the pixel each point falls in (nearest: no float copy of the full-resolution
    masks is made, and a binary mask stays binary)."""
    m, h, w = masks.shape
    xi = (coords[..., 0] * w).long().clamp_(0, w - 1)
    yi = (coords[..., 1] * h).long().clamp_(0, h - 1)
    return masks[torch.arange(m, device=masks.device)[:, None], yi.to(masks.device), xi.to(masks.device)].float()


def in_boxes(unit: Tensor, boxes: Tensor) -> Tensor:
    """unit [m, P, 2] in [0, 1] -> the same points in each row's box: boxes [m, 4] (cx, cy, w, h normalised)."""
    cxcy, wh = boxes[:, None, :2].to(unit), boxes[:, None, 2:].to(unit)
    return cxcy - wh / 2 + unit * wh


@torch.no_grad()
def uncertain_coords(logit_maps: Tensor, points: int, boxes: Tensor, oversample: float = 3.0,
                     importance: float = 0.75) -> Tensor:
    """Per mask logit map [m, h, w] and box [m, 4] (cx, cy, w, h), `points` coords [m, P, 2] in
    the box: round(importance * P) of them the most uncertain (|logit| smallest) of
    round(oversample * P) uniform candidates, the others uniform."""
    m = logit_maps.shape[0]
    candidates = in_boxes(torch.rand(m, max(points, round(oversample * points)), 2, device=logit_maps.device), boxes)
    uncertainty = -sample(logit_maps[:, None], candidates)[:, 0].abs()
    k = min(points, round(importance * points))
    picked = candidates.gather(1, uncertainty.topk(k, dim=1).indices[..., None].expand(-1, -1, 2))
    uniform = in_boxes(torch.rand(m, points - k, 2, device=logit_maps.device), boxes)
    return torch.cat([picked, uniform], 1)


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """logits, targets [M, P] -> [M]: 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), p = sigmoid."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def mask_losses(mask_queries: Tensor, mask_features: Tensor, targets: list[dict], indices, num_boxes: float,
                points: int | None = None, oversample: float = 3.0, importance: float = 0.75) -> dict[str, Tensor]:
    """{'loss_mask', 'loss_dice'} of one level.

    mask_queries [B, Q, C], mask_features [B, C, h, w]; targets per image with 'masks' [n, H, W]
    and 'boxes' [n, 4] (cx, cy, w, h normalised: the points are drawn in them);
    indices: per image (query_idx, gt_idx); num_boxes: the normaliser (objects per process).
    points: per pair (default `num_points(h, w)`).
    """
    points = points or num_points(*mask_features.shape[-2:])
    logits, truth = [], []
    for b, (query_idx, gt_idx) in enumerate(indices):
        if len(query_idx) == 0:
            continue
        if "masks" not in targets[b]:
            raise ValueError("loss 'masks' needs 'masks' in the targets (a data set loaded with masks=True)")
        queries = mask_queries[b, query_idx.to(mask_queries.device)]
        # The matched queries' logit maps at 1/4 resolution ([m, h, w]: m x C x h x w in one GEMM),
        # sampled at the points: far cheaper than sampling C feature channels at m * 3P points.
        maps = torch.einsum("mc,chw->mhw", queries, mask_features[b])
        boxes = targets[b]["boxes"][gt_idx.to(targets[b]["boxes"].device)].to(maps.device)
        coords = uncertain_coords(maps, points, boxes, oversample, importance)
        logits.append(sample(maps[:, None], coords)[:, 0])
        masks = targets[b]["masks"]
        truth.append(point_targets(masks[gt_idx.to(masks.device)], coords).to(maps.device))
    if not logits:  # no objects: zero losses that still reach every mask parameter (DDP needs them used)
        zero = mask_queries.sum() * 0 + mask_features.sum() * 0
        return {"loss_mask": zero, "loss_dice": zero.clone()}
    logits, truth = torch.cat(logits).float(), torch.cat(truth)
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").mean(1)
    return {"loss_mask": bce.sum() / num_boxes, "loss_dice": dice_loss(logits, truth).sum() / num_boxes}


@torch.no_grad()
def mask_costs(mask_queries: Tensor, mask_features: Tensor, gt_masks: Tensor, gt_boxes: Tensor,
               points: int = COST_POINTS, coords: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One image's matching costs: mask_queries [Q, C], mask_features [C, h, w], gt_masks
    [n, H, W], gt_boxes [n, 4] (cx, cy, w, h) -> (BCE cost [Q, n], Dice cost [Q, n]), each pair
    on its object's `points` uniform points in the object's box (or the given coords [n, P, 2])."""
    n = gt_masks.shape[0]
    if coords is None:
        coords = in_boxes(torch.rand(n, points, 2, device=mask_features.device), gt_boxes.to(mask_features.device))
    coords = coords.to(mask_features.device).float()
    points = coords.shape[1]
    sampled = sample(mask_features[None].float(), coords.reshape(1, -1, 2))[0]            # [C, n * P]
    logits = (mask_queries.float() @ sampled).reshape(-1, n, points)                        # [Q, n, P]
    truth = point_targets(gt_masks.to(mask_features.device), coords)[None]                  # [1, n, P]
    bce = (F.softplus(-logits) * truth + F.softplus(logits) * (1 - truth)).mean(-1)
    p = logits.sigmoid()
    dice = 1 - (2 * (p * truth).sum(-1) + 1) / (p.sum(-1) + truth.sum(-1) + 1)
    return bce, dice
