"""Mask losses and matching costs on sampled points, against hand-computed values and dense
computations (point sampling at every pixel centre must equal the dense loss)."""
import math

import pytest
import torch
import torch.nn.functional as F

from rtdetr.train import mask_losses
from rtdetr.train.mask_losses import dice_loss, mask_costs, mask_losses as level_mask_losses, sample
from rtdetr.train.matcher import HungarianMatcher


def point_logits(features: torch.Tensor, queries: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The reference: features [C, h, w] sampled at each query's coords [m, P, 2], dotted with
    queries [m, C] -> logits [m, P]."""
    return torch.stack([queries[i] @ sample(features[None], coords[i:i + 1])[0] for i in range(len(queries))])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def pixel_centres(h: int, w: int) -> torch.Tensor:
    """[h * w, 2] (x, y) in [0, 1] of every pixel centre, row by row."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def test_sampling_at_pixel_centres_reads_the_pixels():
    maps = torch.arange(12.0).reshape(1, 2, 2, 3)
    out = sample(maps, pixel_centres(2, 3)[None])
    # Exact up to the rounding of (x * 2 - 1) to grid coordinates and back.
    assert torch.allclose(out[0], maps[0].reshape(2, -1), atol=1e-5)
    # Near the border the border cells repeat: no fading towards zero.
    assert torch.allclose(sample(maps, torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])), maps[0, :, [0, 1], [0, 2]][None])


def test_bce_and_dice_by_hand_on_a_2x2_map():
    # One feature channel [[1, 2], [3, 4]], query weight 2: logits 2, 4, 6, 8; target [[1, 0], [0, 1]].
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    query = torch.tensor([[2.0]])
    coords = pixel_centres(2, 2)[None]
    logits = point_logits(features, query, coords)
    assert torch.allclose(logits, torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    bce = (softplus(-2) + softplus(4) + softplus(6) + softplus(-8)) / 4
    dice = 1 - (2 * (sigmoid(2) + sigmoid(8)) + 1) / (sum(sigmoid(v) for v in (2, 4, 6, 8)) + 2 + 1)
    assert F.binary_cross_entropy_with_logits(logits, target).item() == pytest.approx(bce, rel=1e-6)
    assert dice_loss(logits, target).item() == pytest.approx(dice, rel=1e-6)

    gt = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], dtype=torch.uint8)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)  # both objects' boxes: the whole picture
    cost_bce, cost_dice = mask_costs(query, features, gt, whole, coords=pixel_centres(2, 2).expand(2, -1, -1))
    other_bce = (softplus(2) + softplus(-4) + softplus(-6) + softplus(8)) / 4
    other_dice = 1 - (2 * (sigmoid(4) + sigmoid(6)) + 1) / (sum(sigmoid(v) for v in (2, 4, 6, 8)) + 2 + 1)
    assert cost_bce.tolist()[0] == pytest.approx([bce, other_bce], rel=1e-6)
    assert cost_dice.tolist()[0] == pytest.approx([dice, other_dice], rel=1e-6)


def test_pairwise_costs_equal_a_loop_over_pairs():
    torch.manual_seed(0)
    queries, features = torch.randn(7, 5), torch.randn(5, 6, 8)
    gt = (torch.rand(3, 24, 32) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.5], [0.6, 0.5, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    torch.manual_seed(1)
    cost_bce, cost_dice = mask_costs(queries, features, gt, boxes, points=50)
    torch.manual_seed(1)
    coords = mask_losses.in_boxes(torch.rand(3, 50, 2), boxes)              # each object's own points
    assert (coords[0, :, 0] >= 0.2).all() and (coords[0, :, 0] <= 0.4).all()
    truth = mask_losses.point_targets(gt, coords)                             # [3, 50]
    for q in range(7):
        for g in range(3):
            logits = point_logits(features, queries[q:q + 1], coords[g:g + 1])[0]
            bce = F.binary_cross_entropy_with_logits(logits, truth[g])
            dice = dice_loss(logits[None], truth[g:g + 1])[0]
            # float32 sums of 50 terms in another order: 1e-5 relative is far above their rounding.
            assert cost_bce[q, g].item() == pytest.approx(bce.item(), rel=1e-5)
            assert cost_dice[q, g].item() == pytest.approx(dice.item(), rel=1e-5)


def test_level_loss_at_every_pixel_centre_equals_the_dense_loss(monkeypatch):
    torch.manual_seed(1)
    h, w = 6, 8
    mask_queries, mask_features = torch.randn(2, 5, 4, requires_grad=True), torch.randn(2, 4, h, w)
    masks = [(torch.rand(3, h, w) > 0.5).to(torch.uint8), (torch.rand(2, h, w) > 0.5).to(torch.uint8)]
    targets = [{"masks": m, "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]] * len(m))} for m in masks]
    indices = [(torch.tensor([4, 0]), torch.tensor([2, 0])), (torch.tensor([1]), torch.tensor([1]))]
    grid = pixel_centres(h, w)
    monkeypatch.setattr(mask_losses, "uncertain_coords", lambda maps, *a: grid.expand(maps.shape[0], -1, -1))
    got = level_mask_losses(mask_queries, mask_features, targets, indices, num_boxes=2.5)

    dense_logits, dense_truth = [], []
    for b, (qi, gi) in enumerate(indices):
        full = torch.einsum("qc,chw->qhw", mask_queries[b], mask_features[b])   # dense, independent path
        dense_logits.append(full[qi].reshape(len(qi), -1))
        dense_truth.append(masks[b][gi].reshape(len(gi), -1).float())
    logits, truth = torch.cat(dense_logits), torch.cat(dense_truth)
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").mean(1).sum() / 2.5
    dice = dice_loss(logits, truth).sum() / 2.5
    assert got["loss_mask"].item() == pytest.approx(bce.item(), rel=1e-5)
    assert got["loss_dice"].item() == pytest.approx(dice.item(), rel=1e-5)
    (got["loss_mask"] + got["loss_dice"]).backward()
    assert mask_queries.grad[0, 4].abs().sum() > 0 and mask_queries.grad[0, 1].abs().sum() == 0  # matched only


def test_uncertain_points_are_the_most_uncertain_candidates():
    # logit = 40 * (x - 0.5): the uncertain points are those near x = 0.5.
    w = 64
    logit_map = (torch.arange(w) + 0.5).div(w).sub(0.5).mul(40).expand(1, 4, w)   # [m=1, h=4, w]
    torch.manual_seed(3)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]])  # points in the whole picture
    coords = mask_losses.uncertain_coords(logit_map, 100, whole, oversample=3.0, importance=0.75)
    torch.manual_seed(3)
    candidates = torch.rand(1, 300, 2)
    distance = (candidates[0, :, 0] - 0.5).abs()
    threshold = distance.sort().values[74]  # the 75th closest of the 300 candidates
    picked = (coords[0, :75, 0] - 0.5).abs()
    assert coords.shape == (1, 100, 2)
    # |logit| is monotone in |x - 0.5| (linear between cell centres, border cells repeated in y), so
    # the 75 picked are the 75 closest candidates; 1e-6 covers the float rounding of the sampling.
    assert (picked <= threshold + 1e-6).all()


def test_points_lie_in_their_objects_box():
    torch.manual_seed(0)
    boxes = torch.tensor([[0.25, 0.75, 0.1, 0.2], [0.6, 0.3, 0.4, 0.2]])
    coords = mask_losses.uncertain_coords(torch.randn(2, 8, 8), 64, boxes)
    low, high = boxes[:, None, :2] - boxes[:, None, 2:] / 2, boxes[:, None, :2] + boxes[:, None, 2:] / 2
    assert coords.shape == (2, 64, 2) and ((coords >= low) & (coords <= high)).all()
    # Spread over the box, not bunched: every quarter of each box gets points.
    quarter = ((coords - low) / (high - low) * 2).floor().clamp(0, 1)
    assert all(len(torch.unique(quarter[i], dim=0)) == 4 for i in range(2))


def test_targets_are_read_at_the_pixel_each_point_falls_in():
    masks = torch.zeros(1, 4, 6, dtype=torch.uint8)
    masks[0, 1, 4] = 1
    coords = torch.tensor([[[4.5 / 6, 1.5 / 4], [4.01 / 6, 1.99 / 4], [3.99 / 6, 1.5 / 4], [1.0, 1.0]]])
    assert point_targets_of(masks, coords) == [1.0, 1.0, 0.0, 0.0]


def point_targets_of(masks, coords):
    return mask_losses.point_targets(masks, coords)[0].tolist()


def test_no_objects_gives_zero_losses_with_gradient():
    q, f = torch.randn(1, 4, 3, requires_grad=True), torch.randn(1, 3, 4, 4, requires_grad=True)
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    got = level_mask_losses(q, f, [{"masks": torch.zeros(0, 4, 4), "boxes": torch.zeros(0, 4)}], [empty],
                            num_boxes=1.0)
    assert got["loss_mask"].item() == 0 and got["loss_dice"].item() == 0
    (got["loss_mask"] + got["loss_dice"]).backward()
    assert q.grad is not None and f.grad is not None


def test_mask_costs_decide_a_match_the_boxes_cannot():
    # Two queries with the same class score and box; only their masks tell them apart.
    h = w = 8
    features = torch.zeros(2, h, w)
    features[0, :, : w // 2] = 1.0   # channel 0: the left half
    features[1, :, w // 2:] = 1.0    # channel 1: the right half
    queries = torch.tensor([[-10.0, 10.0], [10.0, -10.0]])  # query 0 paints the right half, query 1 the left
    gt = torch.zeros(1, h, w, dtype=torch.uint8)
    gt[0, :, : w // 2] = 1                                  # the object is the left half
    outputs = {"pred_logits": torch.zeros(1, 2, 1), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5]] * 2]),
               "mask_queries": queries[None], "mask_features": features[None]}
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.25, 0.5, 0.5, 1.0]]), "masks": gt}]
    torch.manual_seed(0)
    (query_idx, gt_idx), = HungarianMatcher(cost_mask=5.0, cost_dice=5.0)(outputs, target)
    assert query_idx.tolist() == [1] and gt_idx.tolist() == [0]
    with pytest.raises(ValueError, match="masks=True"):
        HungarianMatcher(cost_mask=5.0)(outputs, [{k: v for k, v in target[0].items() if k != "masks"}])


def test_denoising_levels_supervise_masks_of_one_group(monkeypatch):
    from rtdetr.models.zoo import create_model
    from rtdetr.train import criterion as criterion_module
    from rtdetr.train.criterion import RTDETRCriterion

    torch.manual_seed(0)
    masks = torch.zeros(2, 128, 128, dtype=torch.uint8)
    masks[0, 20:60, 20:80], masks[1, 70:120, 40:100] = 1, 1
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[50 / 128, 40 / 128, 60 / 128, 40 / 128],
                                                                       [70 / 128, 95 / 128, 60 / 128, 50 / 128]]),
                "masks": masks}]
    out = create_model("demo_seg").train()(torch.rand(1, 3, 128, 128), targets=targets)
    groups = out["dn_meta"]["dn_num_group"]
    assert groups > 1
    seen = []
    real = criterion_module.mask_losses
    monkeypatch.setattr(criterion_module, "mask_losses",
                        lambda q, f, t, indices, num_boxes, points: seen.append((indices, num_boxes)) or
                        real(q, f, t, indices, num_boxes, points))
    crit = RTDETRCriterion(3, HungarianMatcher(cost_mask=1.0, cost_dice=1.0), losses=("vfl", "boxes", "masks"),
                           weight_dict={"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 1, "loss_dice": 1})
    losses = crit(out, targets)
    assert {"loss_mask_dn_0", "loss_dice_dn_2", "loss_mask_enc_0", "loss_mask_aux_1"} <= set(losses)
    dn = seen[-3:]  # the denoising levels come last
    positives = out["dn_meta"]["dn_positive_idx"][0]
    for (pairs,), num_boxes in dn:
        query_idx, gt_idx = pairs
        assert torch.equal(query_idx, positives[:2]) and gt_idx.tolist() == [0, 1]  # group 0's queries
        assert num_boxes == pytest.approx(2.0)  # the objects once, not once per group
