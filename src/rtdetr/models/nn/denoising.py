"""Contrastive denoising queries for training (DINO-style, as RT-DETR trains).

Ground-truth boxes and labels are copied into `num_group` groups of noisy queries: in each
group, positives (small box noise, should reconstruct the object) and negatives (larger box
noise, should predict "no object"). Groups cannot see each other, and the matching queries
cannot see any of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import box_convert

from rtdetr.models.nn.common import inverse_sigmoid


@dataclass
class DenoisingGroups:
    """content [B, D, C], ref_unact [B, D, 4] (box logits), attn_mask [D+Q, D+Q] (True = blocked)
    and the meta data the criterion needs: `dn_positive_idx` (per image, the positive query indices
    of all groups), `dn_num_group`, `dn_num_split` [D, Q]."""

    content: torch.Tensor
    ref_unact: torch.Tensor
    attn_mask: torch.Tensor
    meta: dict


def build_denoising_groups(targets: list[dict], num_classes: int, num_queries: int, class_embed: nn.Embedding,
                           num_denoising: int = 100, label_noise_ratio: float = 0.5,
                           box_noise_scale: float = 1.0, flip_negative: bool = False) -> DenoisingGroups:
    """targets: per image {'labels' [n] int64, 'boxes' [n, 4] normalised cx, cy, w, h}.

    `flip_negative`: a noisy box whose corners crossed (negative width or height) gets the
    absolute size, as the D-FINE family trains; otherwise (RT-DETR) it is clipped to ~0."""
    num_gts = [len(t["labels"]) for t in targets]
    device = class_embed.weight.device
    bs, max_gt = len(targets), max(num_gts)
    empty_batch = max_gt == 0
    # A batch without any object still gets one padded, masked query, so that every process
    # of a distributed run uses the same parameters (no DDP hang on empty batches).
    max_gt = max(max_gt, 1)
    num_group = max(1, num_denoising // max_gt) if not empty_batch else 1

    labels = torch.full([bs, max_gt], num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros([bs, max_gt, 4], device=device)
    is_gt = torch.zeros([bs, max_gt], dtype=torch.bool, device=device)
    if empty_batch:
        boxes[..., :2], boxes[..., 2:] = 0.5, 0.1  # a valid dummy box; never a positive
    for i, (t, n) in enumerate(zip(targets, num_gts)):
        if n:
            labels[i, :n] = t["labels"]
            boxes[i, :n] = t["boxes"]
            is_gt[i, :n] = True

    # Each group: max_gt positives then max_gt negatives.
    labels = labels.tile([1, 2 * num_group])
    boxes = boxes.tile([1, 2 * num_group, 1])
    is_gt = is_gt.tile([1, 2 * num_group])
    negative = torch.zeros([bs, 2 * max_gt, 1], device=device)
    negative[:, max_gt:] = 1
    negative = negative.tile([1, num_group, 1])
    positive = (1 - negative).squeeze(-1) * is_gt
    positive_idx = torch.nonzero(positive)[:, 1].split([n * num_group for n in num_gts])
    num_dn = 2 * max_gt * num_group

    if label_noise_ratio > 0:
        flip = torch.rand_like(labels, dtype=torch.float) < (label_noise_ratio * 0.5)
        random_labels = torch.randint_like(labels, 0, num_classes)
        labels = torch.where(flip & is_gt, random_labels, labels)

    ref_unact = inverse_sigmoid(boxes)
    if box_noise_scale > 0:
        corners = box_convert(boxes, "cxcywh", "xyxy")
        half_wh = boxes[..., 2:].tile([1, 1, 2]) * 0.5 * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        # Positives move by less than half their size, negatives by one to two halves.
        part = torch.rand_like(boxes)
        part = (part + 1.0) * negative + part * (1 - negative)
        corners = (corners + sign * part * half_wh).clip(min=0.0, max=1.0)
        noisy = box_convert(corners, "xyxy", "cxcywh")
        ref_unact = inverse_sigmoid(noisy.abs() if flip_negative else noisy)

    size = num_dn + num_queries
    group = torch.arange(num_dn, device=device) // (2 * max_gt)
    attn_mask = torch.zeros([size, size], dtype=torch.bool, device=device)
    attn_mask[num_dn:, :num_dn] = True  # matching queries cannot see the reconstructions
    attn_mask[:num_dn, :num_dn] = group[:, None] != group[None, :]  # groups cannot see each other

    meta = {"dn_positive_idx": positive_idx, "dn_num_group": num_group, "dn_num_split": [num_dn, num_queries]}
    return DenoisingGroups(class_embed(labels), ref_unact, attn_mask, meta)
