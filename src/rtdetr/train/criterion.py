"""The training loss of RT-DETR (v1/v2) and of the distribution decoders (D-FINE, DEIM, RT-DETRv4).

Terms, computed on (query, object) pairs, chosen by loss name (`LOSSES`, as DETR's
`SetCriterion(losses=[...])`):

- "vfl"    loss_vfl:  varifocal loss on the class logits of all queries; a matched query's
                      target is the IoU q of its box with its object, at that object's class.
- "mal"    loss_mal:  DEIM's matchability-aware loss: target q**gamma, positives weighted 1.
- "boxes"  loss_bbox: L1 distance between matched boxes (cx, cy, w, h);
           loss_giou: 1 - GIoU between matched boxes.
- "local"  loss_fgl:  D-FINE's fine-grained localisation loss on the edge distributions
                      ('pred_corners') of the matched queries;
           loss_ddf:  D-FINE's decoupled distillation focal loss, every query's edge
                      distributions against the last decoder layer's ('teacher_corners').
           (`rtdetr.train.distribution_losses`.)
- "masks"  loss_mask: sigmoid BCE of the matched queries' masks on sampled points;
           loss_dice: their Dice loss (`rtdetr.train.mask_losses`); on every level whose
                      outputs carry 'mask_queries' and 'mask_features' (a mask head's: '',
                      '_aux_i', '_enc_i', '_dn_i'), with the level's own pairs (the
                      denoising levels: the first group's, `first_group`); the targets then
                      need 'masks' [n, H, W].

Levels and their suffixes:

- ''        the last decoder layer, Hungarian-matched;
- '_aux_i'  earlier decoder layers (`outputs['aux_outputs']`), each matched anew;
- '_pre'    the first decoder layer's plain box head (`outputs['pre_outputs']`), matched anew;
- '_enc_i'  the encoder's top-k proposals (`outputs['enc_aux_outputs']`), matched anew;
- '_dn_i'   the denoising queries of every decoder layer (`outputs['dn_aux_outputs']`): their
            objects are known by construction (`outputs['dn_meta']`), so nothing is matched;
            normalised by num_boxes * dn_num_group;
- '_dn_pre' the denoising queries of the plain box head (`outputs['dn_pre_outputs']`).

"local" applies to the levels with distributions: loss_fgl to '', '_aux_i', '_dn_i'; loss_ddf
to '_aux_i', '_dn_i' (not to the layer that is the teacher itself, i.e. a level whose corners
equal the teacher's). Those levels then need 'pred_corners' and 'ref_points' (the box every
layer decodes from), the aux and dn levels also 'teacher_corners' and 'teacher_logits', and
`outputs` itself 'up' and 'reg_scale'.

Union set (`use_union_set`, D-FINE / DEIM): the pairs of '', '_aux_i', '_pre' and '_enc_i' are
pooled (`union_indices`); the box and local terms of '', '_aux_i', '_pre' and the box terms of
'_enc_i' then use that pool, normalised by its size, while classification keeps each level's
own pairs and the object count.

The result is a dict of weighted terms; the training loss is their plain sum. With losses
("vfl", "boxes") and `DEFAULT_WEIGHTS` this reproduces the official `RTDETRCriterionv2` (and v1
`RTDETRCriterion`) of every COCO config; with ("vfl", "boxes", "local"), weights vfl 1, bbox 5,
giou 2, fgl 0.15, ddf 1.5 and `use_union_set=True` the D-FINE criterion (37 terms for a 3-layer
decoder); with "mal" (weight 1) in place of "vfl" and gamma 1.5, DEIM's and RT-DETRv4's.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from rtdetr.models.nn.distribution import weighting_function
from rtdetr.train.distribution_losses import DDFBalance, ddf_loss, fgl_loss, fgl_targets
from rtdetr.train.mask_losses import mask_losses
from rtdetr.train.matcher import HungarianMatcher, Indices

Outputs = dict[str, Any]  # 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4], optional levels (see module doc)
Targets = list[dict[str, Tensor]]  # per image: 'labels' int64 [n], 'boxes' [n, 4] cx, cy, w, h

DEFAULT_WEIGHTS = {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
# Loss name -> the terms it adds (per level).
LOSSES: dict[str, tuple[str, ...]] = {"vfl": ("loss_vfl",), "boxes": ("loss_bbox", "loss_giou"),
                                      "mal": ("loss_mal",), "local": ("loss_fgl", "loss_ddf"),
                                      "masks": ("loss_mask", "loss_dice")}

DEFAULT_LOSSES = ("vfl", "boxes")
# Level kinds (see module doc) whose terms "local" adds.
FGL_LEVELS = ("main", "aux", "dn")
DDF_LEVELS = ("aux", "dn")
# Level kinds whose box (and local) terms use the union set when `use_union_set`.
UNION_LEVELS = ("main", "aux", "pre", "enc")


def check_losses(losses) -> tuple[str, ...]:
    """`losses` as a tuple of known names; a one-line ValueError naming the known ones otherwise."""
    losses = (losses,) if isinstance(losses, str) else tuple(losses)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        what = f"unknown loss(es) {', '.join(map(repr, unknown))}" if unknown else "no losses given"
        raise ValueError(f"{what}; known: {', '.join(LOSSES)}")
    return losses


class Level(NamedTuple):
    """One prediction level: its term suffix, kind ('main', 'aux', 'pre', 'enc', 'dn', 'dn_pre'),
    outputs, own pairs and normaliser, and the pairs and normaliser of its box / local terms."""
    suffix: str
    kind: str
    outputs: Outputs
    indices: Indices
    num_boxes: float
    box_indices: Indices
    box_num_boxes: float


class RTDETRCriterion(nn.Module):
    """num_classes: K, the width of 'pred_logits'.
    matcher: assigns objects to queries for the Hungarian-matched levels.
    weight_dict: weight of each term by its base name; a term missing from it is dropped.
    alpha, gamma: varifocal parameters (weight of negatives, focusing exponent); gamma is also
        MAL's exponent (DEIM: 1.5).
    losses: which losses, by name (`LOSSES`); an unknown name is a ValueError.
    use_union_set: box and local terms on the union of all matched levels' pairs (module doc);
        the D-FINE / DEIM recipes set it, RT-DETR's do not.
    ddf_temperature: T of the distillation loss (D-FINE: 5).
    mask_points: points per mask of loss 'masks' (default: one per 4x4 mask-feature cells).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher,
                 weight_dict: dict[str, float] | None = None, alpha: float = 0.75, gamma: float = 2.0,
                 losses: tuple[str, ...] = DEFAULT_LOSSES, *, use_union_set: bool = False,
                 ddf_temperature: float = 5.0, mask_points: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        self.losses = check_losses(losses)
        self.alpha = alpha
        self.gamma = gamma
        self.use_union_set = use_union_set
        self.ddf_temperature = ddf_temperature
        self.mask_points = mask_points

    def forward(self, outputs: Outputs, targets: Targets) -> dict[str, Tensor]:
        """outputs: the model's training outputs (see module doc); targets: one dict per image.

        returns {term name: scalar weighted loss}, e.g. 'loss_vfl', 'loss_bbox_aux_0', 'loss_giou_dn_2'.
        """
        levels = self.levels(outputs, targets)
        weights = self.bin_weights(outputs) if "local" in self.losses else None
        losses = {}
        # DDF of the denoising levels mixes its two means with the counts of the last aux level
        # that has a DDF term (as the official code does), so the aux levels go first.
        balance = None
        for level in levels:
            terms, level_balance = self.level_terms(level, targets, weights, outputs, balance)
            if level.kind == "aux" and level_balance is not None:
                balance = level_balance
            losses.update({name + level.suffix: value * self.weight_dict[name]
                           for name, value in terms.items() if name in self.weight_dict})
        return losses

    def match(self, outputs: Outputs, targets: Targets) -> Indices:
        """The assignment of the last decoder layer: B pairs (query_idx, gt_idx) of int64 tensors."""
        keys = ("pred_logits", "pred_boxes", "mask_queries", "mask_features")
        main = {key: outputs[key] for key in keys if key in outputs}
        return self.matcher(main, targets)

    def levels(self, outputs: Outputs, targets: Targets) -> list[Level]:
        """Every level of `outputs`, matched, with the pairs and normalisers of its terms; the
        decoder levels in order '', '_aux_i', '_pre', '_enc_i', then '_dn_i', '_dn_pre'."""
        device = outputs["pred_logits"].device
        num_boxes = average_num_boxes(targets, device)
        if outputs.get("enc_aux_outputs") and outputs.get("enc_meta", {}).get("class_agnostic", False):
            raise NotImplementedError("class-agnostic encoder proposals are not supported")

        matched = [("", "main", outputs, self.match(outputs, targets))]
        matched += [(f"_aux_{i}", "aux", aux, self.matcher(aux, targets))
                    for i, aux in enumerate(outputs.get("aux_outputs", []))]
        if "pre_outputs" in outputs:
            matched.append(("_pre", "pre", outputs["pre_outputs"], self.matcher(outputs["pre_outputs"], targets)))
        matched += [(f"_enc_{i}", "enc", enc, self.matcher(enc, targets))
                    for i, enc in enumerate(outputs.get("enc_aux_outputs", []))]

        if self.use_union_set:
            union = union_indices([indices for *_, indices in matched])
            union_num = average_count(sum(len(q) for q, _ in union), device)
        levels = []
        for suffix, kind, level, indices in matched:
            shared = self.use_union_set and kind in UNION_LEVELS
            levels.append(Level(suffix, kind, level, indices, num_boxes,
                                union if shared else indices, union_num if shared else num_boxes))

        if "dn_aux_outputs" in outputs or "dn_pre_outputs" in outputs:
            dn_meta = outputs["dn_meta"]
            indices = denoising_indices(dn_meta, targets)
            # Each object appears once per denoising group, so normalise by all those copies.
            dn_num_boxes = num_boxes * dn_meta["dn_num_group"]
            dn = [(f"_dn_{i}", "dn", level) for i, level in enumerate(outputs.get("dn_aux_outputs", []))]
            if "dn_pre_outputs" in outputs:
                dn.append(("_dn_pre", "dn_pre", outputs["dn_pre_outputs"]))
            levels += [Level(suffix, kind, level, indices, dn_num_boxes, indices, dn_num_boxes)
                       for suffix, kind, level in dn]
        return levels

    def bin_weights(self, outputs: Outputs) -> Tensor:
        """W(0..N) of the distribution decoder, N from the width of outputs['pred_corners']."""
        missing = [key for key in ("pred_corners", "up", "reg_scale") if key not in outputs]
        if missing:
            raise ValueError(f"loss 'local' needs {', '.join(map(repr, missing))} in the outputs "
                             "(a distribution decoder's training outputs)")
        width = outputs["pred_corners"].shape[-1]
        if width % 4:
            raise ValueError(f"'pred_corners' has width {width}, not 4 * (reg_max + 1)")
        with torch.no_grad():
            return weighting_function(width // 4 - 1, outputs["up"], outputs["reg_scale"])

    def level_terms(self, level: Level, targets: Targets, weights: Tensor | None, outputs: Outputs,
                    balance: DDFBalance | None) -> tuple[dict[str, Tensor], DDFBalance | None]:
        """The unweighted terms of `self.losses` for one level (names without suffix), and the
        DDF balance it used (None without a DDF term)."""
        out = level.outputs
        pred, gt = matched_boxes(out["pred_boxes"], targets, level.indices)
        if level.box_indices is level.indices:
            box_pred, box_gt = pred, gt
        else:
            box_pred, box_gt = matched_boxes(out["pred_boxes"], targets, level.box_indices)
        terms, used_balance = {}, None
        for loss in self.losses:
            if loss == "vfl":
                terms["loss_vfl"] = self.loss_vfl(out["pred_logits"], pred, gt, targets, level.indices,
                                                  level.num_boxes)
            elif loss == "mal":
                terms["loss_mal"] = self.loss_mal(out["pred_logits"], pred, gt, targets, level.indices,
                                                  level.num_boxes)
            elif loss == "boxes":
                terms["loss_bbox"] = F.l1_loss(box_pred, box_gt, reduction="sum") / level.box_num_boxes
                terms["loss_giou"] = (1 - paired_giou(box_pred, box_gt)).sum() / level.box_num_boxes
            elif loss == "local" and level.kind in FGL_LEVELS:
                local, used_balance = self.loss_local(level, box_pred, box_gt, weights, outputs["reg_scale"],
                                                      balance if level.kind == "dn" else None)
                terms.update(local)
            elif loss == "masks" and "mask_queries" in out:
                indices, num_boxes = level.indices, level.num_boxes
                if level.kind == "dn":  # one denoising group: the others repeat its objects (see below)
                    indices, num_boxes = first_group(indices, targets), level.num_boxes / outputs["dn_meta"]["dn_num_group"]
                terms.update(mask_losses(out["mask_queries"], out["mask_features"], targets, indices, num_boxes,
                                         self.mask_points))
        return terms, used_balance

    def loss_vfl(self, logits: Tensor, pred: Tensor, gt: Tensor, targets: Targets, indices: Indices,
                 num_boxes: float) -> Tensor:
        """Varifocal loss (VarifocalNet, Zhang et al. 2021).

        logits [B, Q, K]; pred, gt [M, 4]: the M matched boxes, in the order of `indices`.
        Binary cross-entropy per (query, class) against a soft target: the IoU of the matched
        box at the object's class, 0 elsewhere. Positives are weighted by that IoU, negatives by
        alpha * p**gamma, which fades out the many easy negatives.
        """
        is_positive, iou_at = positive_ious(logits, pred, gt, targets, indices)
        target_score = iou_at
        weight = torch.where(is_positive, target_score, self.alpha * logits.sigmoid().detach() ** self.gamma)
        return class_bce(logits, target_score, weight, num_boxes)

    def loss_mal(self, logits: Tensor, pred: Tensor, gt: Tensor, targets: Targets, indices: Indices,
                 num_boxes: float) -> Tensor:
        """Matchability-aware loss (DEIM, Huang et al. 2025); arguments as `loss_vfl`.

        As varifocal, but a positive's target is IoU**gamma and its weight 1 (not the IoU), and
        negatives weigh p**gamma (no alpha): low-IoU matches still get a full-weight, if small,
        target.
        """
        is_positive, iou_at = positive_ious(logits, pred, gt, targets, indices)
        target_score = iou_at ** self.gamma
        weight = torch.where(is_positive, torch.ones_like(logits), logits.sigmoid().detach() ** self.gamma)
        return class_bce(logits, target_score, weight, num_boxes)

    def loss_local(self, level: Level, pred: Tensor, gt: Tensor, weights: Tensor, reg_scale: Tensor,
                   balance: DDFBalance | None) -> tuple[dict[str, Tensor], DDFBalance | None]:
        """loss_fgl, and for aux / dn levels loss_ddf, of one level on its box pairs.

        pred, gt [M, 4]: the level's boxes and objects of `level.box_indices`; weights [N + 1]
        the bin offsets; balance: DDF's mixing counts to use (None: the level's own).
        """
        out = level.outputs
        needed = ("pred_corners", "ref_points") + (("teacher_corners", "teacher_logits")
                                                   if level.kind in DDF_LEVELS else ())
        missing = [key for key in needed if key not in out]
        if missing:
            raise ValueError(f"loss 'local' needs {', '.join(map(repr, missing))} in level "
                             f"'{level.suffix or 'main'}' (a distribution decoder's training outputs)")
        batch_idx, query_idx = query_positions(level.box_indices, out["pred_corners"].device)
        iou = paired_iou(pred, gt).detach()
        reference = out["ref_points"][batch_idx, query_idx].detach()
        targets = fgl_targets(reference, gt, weights, reg_scale)
        terms = {"loss_fgl": fgl_loss(out["pred_corners"][batch_idx, query_idx], targets, iou,
                                      level.box_num_boxes)}
        if level.kind not in DDF_LEVELS or torch.equal(out["pred_corners"], out["teacher_corners"]):
            return terms, None
        terms["loss_ddf"], balance = ddf_loss(out["pred_corners"], out["teacher_corners"], out["teacher_logits"],
                                              batch_idx, query_idx, iou, self.ddf_temperature, balance)
        return terms, balance


def union_indices(indices_list: list[Indices]) -> Indices:
    """The union set of several levels' assignments, image by image.

    indices_list: one `Indices` per level, all for the same B images. All (query, gt) pairs
    are pooled; each query keeps the gt it is paired with most often (ties: the lower gt index).
    Returns B pairs (query_idx, gt_idx), int64, in decreasing order of that count (ties: by
    query, then gt). A gt may go to several queries.
    """
    union = []
    for per_image in zip(*indices_list):
        pairs = torch.cat([torch.stack([q.to(torch.int64), g.to(q.device, torch.int64)], 1)
                           for q, g in per_image])
        unique, counts = torch.unique(pairs, dim=0, return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)
        kept: dict[int, int] = {}
        for query, gt in unique[order].tolist():
            kept.setdefault(query, gt)
        union.append((torch.tensor(list(kept), dtype=torch.int64, device=pairs.device),
                      torch.tensor(list(kept.values()), dtype=torch.int64, device=pairs.device)))
    return union


def first_group(indices: Indices, targets: Targets) -> Indices:
    """The denoising pairs of the first group only: each group holds every object once, in order
    (`denoising_indices`). The mask terms of the denoising levels use one group: a mask's
    supervision does not depend on the box noise much, and G groups would cost G times the
    matched queries' mask maps (48 of them per image for 4 objects in the demo, against 4)."""
    return [(q[:len(t["labels"])], g[:len(t["labels"])]) for (q, g), t in zip(indices, targets)]


def positive_ious(logits: Tensor, pred: Tensor, gt: Tensor, targets: Targets,
                  indices: Indices) -> tuple[Tensor, Tensor]:
    """logits [B, Q, K] -> (is_positive [B, Q, K] bool, iou_at [B, Q, K]): True / the matched
    box's IoU (detached) at each matched query's object class, False / 0 elsewhere."""
    batch_idx, query_idx = query_positions(indices, logits.device)
    labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
    labels = labels.to(logits.device)
    # The IoU is a target, not something to optimise through.
    iou = paired_iou(pred, gt).detach()
    is_positive = torch.zeros_like(logits, dtype=torch.bool)
    is_positive[batch_idx, query_idx, labels] = True
    iou_at = torch.zeros_like(logits)
    iou_at[batch_idx, query_idx, labels] = iou.to(logits.dtype)
    return is_positive, iou_at


def class_bce(logits: Tensor, target: Tensor, weight: Tensor, num_boxes: float) -> Tensor:
    """Weighted binary cross-entropy of logits [B, Q, K] against target [B, Q, K], / num_boxes."""
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
    # Equal to loss.sum() / num_boxes; written the official way to agree to the last bit.
    return loss.mean(1).sum() * logits.shape[1] / num_boxes


def average_num_boxes(targets: Targets, device: torch.device) -> float:
    """Objects per process: the batch's object count, averaged over all processes when
    torch.distributed is initialised (so every process normalises alike), at least 1."""
    return average_count(sum(len(t["labels"]) for t in targets), device)


def average_count(count: int, device: torch.device) -> float:
    """A per-process count averaged over all processes (when torch.distributed is initialised),
    at least 1."""
    count = torch.tensor([float(count)], device=device)
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
