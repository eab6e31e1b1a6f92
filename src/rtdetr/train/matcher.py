"""Hungarian matching between predicted queries and ground-truth objects.

DETR-style detectors predict a fixed set of Q queries per image; each ground-truth object is
assigned to exactly one query by solving a linear assignment problem on a cost matrix
[Q, num_gt]. Unassigned queries are trained as background. This reproduces the matcher of the
official RT-DETRv2 code (focal-loss flavour of the class cost).
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from rtdetr.train.mask_losses import COST_POINTS, mask_costs

# One (query_idx, gt_idx) pair of int64 tensors of equal length per image.
Indices = list[tuple[Tensor, Tensor]]


class HungarianMatcher(nn.Module):
    """Assigns each ground-truth object of an image to one query, minimising the total cost

        cost = cost_class * focal_class_cost + cost_bbox * L1(boxes) + cost_giou * (-GIoU).

    cost_class, cost_bbox, cost_giou: weights of the three costs (official: 2, 5, 2).
    alpha, gamma: focal parameters of the class cost (official: 0.25, 2).
    cost_mask, cost_dice: segmentation models add `cost_mask * BCE + cost_dice * Dice` of the
        masks on sampled points (`rtdetr.train.mask_losses.mask_costs`; RF-DETR-Seg: 5, 5) for
        outputs with 'mask_queries' and targets with 'masks'; 0 (the default) leaves them out.
    mask_points: points per object (in its box) for the mask costs.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0, cost_mask: float = 0.0, cost_dice: float = 0.0,
                 mask_points: int = COST_POINTS):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.mask_points = mask_points

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Indices:
        """outputs: 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4] (normalised cx, cy, w, h);
        other keys are ignored.
        targets: B dicts with 'labels' int64 [n_i] and 'boxes' [n_i, 4] (normalised cx, cy, w, h).

        returns B pairs (query_idx, gt_idx), int64 on the CPU, each of length min(Q, n_i);
        query_idx is sorted ascending. An image with no objects gets two empty tensors.
        """
        indices = []
        with_masks = (self.cost_mask or self.cost_dice) and "mask_queries" in outputs
        for b, (logits, boxes, target) in enumerate(zip(outputs["pred_logits"], outputs["pred_boxes"], targets)):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits, boxes, target["labels"], target["boxes"])
            if with_masks:
                if "masks" not in target:
                    raise ValueError("mask matching costs need 'masks' in the targets (a data set loaded with masks=True)")
                bce, dice = mask_costs(outputs["mask_queries"][b], outputs["mask_features"][b], target["masks"],
                                       target["boxes"], self.mask_points)
                cost = cost + self.cost_mask * bce + self.cost_dice * dice
            # Non-finite costs (e.g. overflowing logits) would make the assignment fail.
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
            query_idx, gt_idx = linear_sum_assignment(cost.cpu())
            indices.append((torch.as_tensor(query_idx, dtype=torch.int64),
                            torch.as_tensor(gt_idx, dtype=torch.int64)))
        return indices

    def cost_matrix(self, logits: Tensor, boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor) -> Tensor:
        """Matching cost of one image.

        logits [Q, K], boxes [Q, 4], gt_labels [n], gt_boxes [n, 4] -> cost [Q, n].
        """
        class_cost = self.focal_class_cost(logits, gt_labels)
        l1_cost = torch.cdist(boxes, gt_boxes, p=1)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                   box_convert(gt_boxes, "cxcywh", "xyxy"))
        return self.cost_bbox * l1_cost + self.cost_class * class_cost + self.cost_giou * -giou

    def focal_class_cost(self, logits: Tensor, gt_labels: Tensor) -> Tensor:
        """Focal loss of calling each query the object's class, minus the focal loss of calling it
        background for that class: low when the query is confident in the right class.

        logits [Q, K], gt_labels [n] -> cost [Q, n].
        """
        prob = logits.sigmoid()[:, gt_labels]  # [Q, n]: probability of each object's class
        # The 1e-8 keeps log finite at p = 0 or 1 (and is part of the official numbers).
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
        return pos - neg
