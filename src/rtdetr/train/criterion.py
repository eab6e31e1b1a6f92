"""The RT-DETRv2 training loss.

Every prediction level gets the same three terms, computed on (query, object) pairs:

- loss_vfl:  varifocal loss on the class logits of all queries; a matched query's target is
             the IoU of its box with its object, at that object's class.
- loss_bbox: L1 distance between matched predicted and ground-truth boxes (cx, cy, w, h).
- loss_giou: 1 - GIoU between matched boxes.

Levels and their suffixes:

- ''        the last decoder layer, Hungarian-matched;
- '_aux_i'  earlier decoder layers (`outputs['aux_outputs']`), each matched anew;
- '_dn_i'   the denoising queries of every decoder layer (`outputs['dn_aux_outputs']`): their
            objects are known by construction (`outputs['dn_meta']`), so nothing is matched;
- '_enc_i'  the encoder's top-k proposals (`outputs['enc_aux_outputs']`), matched anew.

Which terms: `losses`, by name, as DETR's `SetCriterion(losses=[...])`: "vfl" gives loss_vfl,
"boxes" gives loss_bbox and loss_giou (`LOSSES`). The result is a dict of weighted terms; the
training loss is their plain sum. With losses ("vfl", "boxes") and `DEFAULT_WEIGHTS` this
reproduces the official `RTDETRCriterionv2` (and v1 `RTDETRCriterion`) of every COCO config.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from rtdetr.train.matcher import HungarianMatcher, Indices

Outputs = dict[str, Any]  # 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4], optional levels (see module doc)
Targets = list[dict[str, Tensor]]  # per image: 'labels' int64 [n], 'boxes' [n, 4] cx, cy, w, h

DEFAULT_WEIGHTS = {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
# Loss name -> the terms it adds (per level).
LOSSES: dict[str, tuple[str, ...]] = {"vfl": ("loss_vfl",), "boxes": ("loss_bbox", "loss_giou")}
DEFAULT_LOSSES = ("vfl", "boxes")


def check_losses(losses) -> tuple[str, ...]:
    """`losses` as a tuple of known names; a one-line ValueError naming the known ones otherwise."""
    losses = (losses,) if isinstance(losses, str) else tuple(losses)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        what = f"unknown loss(es) {', '.join(map(repr, unknown))}" if unknown else "no losses given"
        raise ValueError(f"{what}; known: {', '.join(LOSSES)}")
    return losses


class RTDETRCriterion(nn.Module):
    """num_classes: K, the width of 'pred_logits'.
    matcher: assigns objects to queries for the Hungarian-matched levels.
    weight_dict: weight of each term by its base name; a term missing from it is dropped.
    alpha, gamma: varifocal parameters (weight of negatives, focusing exponent).
    losses: which losses, by name (`LOSSES`); an unknown name is a ValueError.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher,
                 weight_dict: dict[str, float] | None = None, alpha: float = 0.75, gamma: float = 2.0,
                 losses: tuple[str, ...] = DEFAULT_LOSSES):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        self.losses = check_losses(losses)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, outputs: Outputs, targets: Targets) -> dict[str, Tensor]:
        """outputs: the model's training outputs (see module doc); targets: one dict per image.

        returns {term name: scalar weighted loss}, e.g. 'loss_vfl', 'loss_bbox_aux_0', 'loss_giou_dn_2'.
        """
        device = outputs["pred_logits"].device
        num_boxes = average_num_boxes(targets, device)
        losses = {}

        losses.update(self.level_losses(outputs, targets, self.match(outputs, targets), num_boxes))

        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            indices = self.matcher(aux, targets)
            losses.update(self.level_losses(aux, targets, indices, num_boxes, suffix=f"_aux_{i}"))

        if "dn_aux_outputs" in outputs:
            dn_meta = outputs["dn_meta"]
            indices = denoising_indices(dn_meta, targets)
            # Each object appears once per denoising group, so normalise by all those copies.
            dn_num_boxes = num_boxes * dn_meta["dn_num_group"]
            for i, dn in enumerate(outputs["dn_aux_outputs"]):
                losses.update(self.level_losses(dn, targets, indices, dn_num_boxes, suffix=f"_dn_{i}"))

        if "enc_aux_outputs" in outputs:
            if outputs.get("enc_meta", {}).get("class_agnostic", False):
                raise NotImplementedError("class-agnostic encoder proposals are not supported")
            for i, enc in enumerate(outputs["enc_aux_outputs"]):
                indices = self.matcher(enc, targets)
                losses.update(self.level_losses(enc, targets, indices, num_boxes, suffix=f"_enc_{i}"))

        return losses

    def match(self, outputs: Outputs, targets: Targets) -> Indices:
        """The assignment of the last decoder layer: B pairs (query_idx, gt_idx) of int64 tensors."""
        main = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
        return self.matcher(main, targets)

    def level_losses(self, outputs: Outputs, targets: Targets, indices: Indices, num_boxes: float,
                     suffix: str = "") -> dict[str, Tensor]:
        """The weighted terms of `self.losses` for one level, keys suffixed with `suffix`."""
        pred, gt = matched_boxes(outputs["pred_boxes"], targets, indices)
        terms = {}
        for loss in self.losses:
            if loss == "vfl":
                terms["loss_vfl"] = self.loss_vfl(outputs["pred_logits"], pred, gt, targets, indices, num_boxes)
            elif loss == "boxes":
                terms["loss_bbox"] = F.l1_loss(pred, gt, reduction="sum") / num_boxes
                terms["loss_giou"] = (1 - paired_giou(pred, gt)).sum() / num_boxes
        return {name + suffix: value * self.weight_dict[name]
                for name, value in terms.items() if name in self.weight_dict}

    def loss_vfl(self, logits: Tensor, pred: Tensor, gt: Tensor, targets: Targets, indices: Indices,
                 num_boxes: float) -> Tensor:
        """Varifocal loss (VarifocalNet, Zhang et al. 2021).

        logits [B, Q, K]; pred, gt [M, 4]: the M matched boxes, in the order of `indices`.
        Binary cross-entropy per (query, class) against a soft target: the IoU of the matched
        box at the object's class, 0 elsewhere. Positives are weighted by that IoU, negatives by
        alpha * p**gamma, which fades out the many easy negatives.
        """
        batch_idx, query_idx = query_positions(indices, logits.device)
        labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        labels = labels.to(logits.device)
        # The IoU is a target, not something to optimise through.
        iou = paired_iou(pred, gt).detach()

        is_positive = torch.zeros_like(logits, dtype=torch.bool)
        is_positive[batch_idx, query_idx, labels] = True
        target_score = torch.zeros_like(logits)
        target_score[batch_idx, query_idx, labels] = iou.to(logits.dtype)
        weight = torch.where(is_positive, target_score, self.alpha * logits.sigmoid().detach() ** self.gamma)

        loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
        # Equal to loss.sum() / num_boxes; written the official way to agree to the last bit.
        return loss.mean(1).sum() * logits.shape[1] / num_boxes


def average_num_boxes(targets: Targets, device: torch.device) -> float:
    """Objects per process: the batch's object count, averaged over all processes when
    torch.distributed is initialised (so every process normalises alike), at least 1."""
    count = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return torch.clamp(count, min=1).item()


def denoising_indices(dn_meta: dict, targets: Targets) -> Indices:
    """Fixed assignment of the denoising queries.

    dn_meta['dn_positive_idx'][i]: int64 [G * n_i], the positive denoising queries of image i,
    group by group; dn_meta['dn_num_group']: G. Each group holds the objects in order, so the
    object indices are arange(n_i) repeated G times.
    """
    num_groups = dn_meta["dn_num_group"]
    indices = []
    for positive_idx, target in zip(dn_meta["dn_positive_idx"], targets):
        gt_idx = torch.arange(len(target["labels"]), dtype=torch.int64,
                              device=target["labels"].device).tile(num_groups)
        if len(positive_idx) != len(gt_idx):
            raise ValueError(f"{len(positive_idx)} positive denoising queries for "
                             f"{len(target['labels'])} objects x {num_groups} groups")
        indices.append((positive_idx.to(torch.int64), gt_idx))
    return indices


def query_positions(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Image and query index [M] each, of all matched queries, images in order."""
    batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
    query_idx = torch.cat([q for q, _ in indices])
    return batch_idx.to(device), query_idx.to(device)


def matched_boxes(pred_boxes: Tensor, targets: Targets, indices: Indices) -> tuple[Tensor, Tensor]:
    """pred_boxes [B, Q, 4] -> (predicted, ground-truth) boxes [M, 4] of the matched pairs."""
    pred = pred_boxes[query_positions(indices, pred_boxes.device)]
    gt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)])
    return pred, gt.to(pred)


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1[m] with boxes2[m]: [M, 4] cx, cy, w, h each -> [M]."""
    # torchvision computes all pairs; a leading batch dim of M with one box each gives only
    # the M pairs we need, with the same arithmetic.
    a, b = box_convert(boxes1, "cxcywh", "xyxy"), box_convert(boxes2, "cxcywh", "xyxy")
    return box_iou(a[:, None], b[:, None])[:, 0, 0]


def paired_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU of boxes1[m] with boxes2[m]: [M, 4] cx, cy, w, h each -> [M]."""
    a, b = box_convert(boxes1, "cxcywh", "xyxy"), box_convert(boxes2, "cxcywh", "xyxy")
    return generalized_box_iou(a[:, None], b[:, None])[:, 0, 0]
