"""The matcher and criterion against the official RT-DETRv2 code (fixture), plus small cases
that can be checked by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rtdetr.train import HungarianMatcher, RTDETRCriterion
from rtdetr.train.criterion import average_num_boxes

FIXTURE = Path(__file__).parent.parent / "fixtures" / "criterion" / "criterion_seed0.pt"


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def official_criterion(fixture) -> RTDETRCriterion:
    m, c = fixture["matcher"], fixture["criterion"]
    matcher = HungarianMatcher(**m["weights"], alpha=m["alpha"], gamma=m["gamma"])
    return RTDETRCriterion(fixture["num_classes"], matcher, weight_dict=c["weights"],
                           alpha=c["alpha"], gamma=c["gamma"])


def box(cx, cy=0.5, w=0.2, h=0.2):
    return [cx, cy, w, h]


# --- against the official code ---------------------------------------------------------------

def test_main_assignment_matches_official(fixture):
    indices = official_criterion(fixture).match(fixture["outputs"], fixture["targets"])
    assert len(indices) == len(fixture["main_indices"])
    for (q, g), (q_ref, g_ref) in zip(indices, fixture["main_indices"]):
        assert q.dtype == g.dtype == torch.int64
        assert torch.equal(q, q_ref) and torch.equal(g, g_ref)


def test_losses_match_official(fixture):
    losses = official_criterion(fixture)(fixture["outputs"], fixture["targets"])
    expected = {k: float(v) for k, v in fixture["losses"].items()}
    assert len(expected) == 21
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5, abs=0), name


def test_losses_backpropagate(fixture):
    outputs = {"pred_logits": fixture["outputs"]["pred_logits"].clone().requires_grad_(),
               "pred_boxes": fixture["outputs"]["pred_boxes"].clone().requires_grad_()}
    losses = official_criterion(fixture)(outputs, fixture["targets"])
    sum(losses.values()).backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()
    assert torch.isfinite(outputs["pred_boxes"].grad).all()
    assert outputs["pred_boxes"].grad.abs().sum() > 0


# --- matcher by hand -------------------------------------------------------------------------

def test_matcher_l1_prefers_global_optimum_over_greedy():
    # Only the x centre differs. L1 costs: q0-t0 0.05, q0-t1 0.10, q1-t0 0.35, q1-t1 0.50.
    # Greedy takes the cheapest pair q0-t0 first (total 0.55); the optimum is q0-t1, q1-t0 (0.45).
    matcher = HungarianMatcher(cost_class=0, cost_bbox=1, cost_giou=0)
    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_boxes": torch.tensor([[box(0.5), box(0.1)]])}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([box(0.45), box(0.6)])}]
    (q, g), = matcher(outputs, targets)
    assert q.tolist() == [0, 1] and g.tolist() == [1, 0]


def test_matcher_class_cost_follows_confident_class():
    # Same boxes everywhere, so only the class decides: query 0 is sure of class 1, query 1 of class 0.
    matcher = HungarianMatcher()
    logits = torch.tensor([[[-5.0, 5.0], [5.0, -5.0]]])
    outputs = {"pred_logits": logits, "pred_boxes": torch.tensor([[box(0.5), box(0.5)]])}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([box(0.5), box(0.5)])}]
    (q, g), = matcher(outputs, targets)
    assert q.tolist() == [0, 1] and g.tolist() == [1, 0]


def test_focal_class_cost_by_hand():
    # p = sigmoid(0) = 1/2: alpha (1/2)^2 ln 2 - (1 - alpha) (1/2)^2 ln 2 = (2 alpha - 1) ln(2) / 4
    cost = HungarianMatcher(alpha=0.25).focal_class_cost(torch.zeros(1, 3), torch.tensor([2]))
    assert cost.item() == pytest.approx(-0.5 * math.log(2) / 4, rel=1e-6)


def test_matcher_image_without_objects():
    outputs = {"pred_logits": torch.zeros(2, 3, 2), "pred_boxes": torch.full((2, 3, 4), 0.5)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([box(0.5)])}]
    (q0, g0), (q1, g1) = HungarianMatcher()(outputs, targets)
    assert q0.dtype == g0.dtype == torch.int64 and len(q0) == len(g0) == 0
    assert len(q1) == len(g1) == 1


# --- criterion by hand -----------------------------------------------------------------------

def one_query_setup(pred_box):
    """One image, one object of class 1 at box(0.3), two queries; query 0 is clearly the match."""
    logits = torch.tensor([[[-3.0, 3.0], [-3.0, -3.0]]])
    boxes = torch.tensor([[pred_box, box(0.9)]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([box(0.3)])}]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


def test_perfect_boxes_give_zero_box_losses():
    outputs, targets = one_query_setup(box(0.3))
    losses = RTDETRCriterion(2, HungarianMatcher())(outputs, targets)
    assert set(losses) == {"loss_vfl", "loss_bbox", "loss_giou"}
    assert losses["loss_bbox"].item() == 0
    assert losses["loss_giou"].item() == pytest.approx(0, abs=1e-7)


def test_box_losses_by_hand():
    # Predicted box shifted by 0.1 in x, same size 0.2 x 0.2: L1 = 0.1; intersection 0.1 x 0.2,
    # union 2 * 0.04 - 0.02 = 0.06, enclosing box 0.3 x 0.2 = 0.06, so GIoU = IoU = 1/3.
    outputs, targets = one_query_setup(box(0.4))
    losses = RTDETRCriterion(2, HungarianMatcher())(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.1, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(2 * (1 - 1 / 3), rel=1e-5)

    # VFL: the positive (query 0, class 1) targets IoU 1/3 with weight 1/3; every other entry
    # targets 0 with weight alpha * sigmoid(x)^2. Mean over the 2 queries, times 2, / 1 box.
    logits = outputs["pred_logits"][0]
    target = torch.tensor([[0.0, 1 / 3], [0.0, 0.0]])
    weight = torch.where(target > 0, target, 0.75 * logits.sigmoid() ** 2)
    vfl = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    assert losses["loss_vfl"].item() == pytest.approx(vfl.item(), rel=1e-5)


def test_image_without_objects_adds_only_to_vfl():
    outputs, targets = one_query_setup(box(0.4))
    criterion = RTDETRCriterion(2, HungarianMatcher())
    alone = criterion(outputs, targets)

    empty_logits = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])
    batch = {"pred_logits": torch.cat([outputs["pred_logits"], empty_logits]),
             "pred_boxes": torch.cat([outputs["pred_boxes"], torch.rand(1, 2, 4) * 0.5 + 0.1])}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    both = criterion(batch, targets + [empty])

    # Same object count (1), so the box terms are unchanged...
    assert both["loss_bbox"].item() == alone["loss_bbox"].item()
    assert both["loss_giou"].item() == alone["loss_giou"].item()
    # ...while all the empty image's queries are negatives: weight alpha p^2, BCE vs 0 = softplus.
    extra = (0.75 * empty_logits.sigmoid() ** 2 * F.softplus(empty_logits)).sum()
    assert both["loss_vfl"].item() == pytest.approx(alone["loss_vfl"].item() + extra.item(), rel=1e-5)


def test_num_boxes_is_at_least_one():
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    assert average_num_boxes([empty, empty], torch.device("cpu")) == 1.0
    full = {"labels": torch.tensor([0, 1, 2]), "boxes": torch.rand(3, 4)}
    assert average_num_boxes([full, empty, full], torch.device("cpu")) == 6.0


def test_denoising_terms_use_fixed_indices_and_group_normalisation():
    # 2 groups x (1 positive + 1 negative) denoising queries; the positives (0 and 2) sit exactly
    # on the object, so their box terms are 0 whatever the other queries predict.
    outputs, targets = one_query_setup(box(0.3))
    dn_boxes = torch.tensor([[box(0.3), box(0.7), box(0.3), box(0.1)]])
    outputs["dn_aux_outputs"] = [{"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": dn_boxes}]
    outputs["dn_meta"] = {"dn_positive_idx": [torch.tensor([0, 2])], "dn_num_group": 2}
    losses = RTDETRCriterion(2, HungarianMatcher())(outputs, targets)
    assert losses["loss_bbox_dn_0"].item() == 0
    assert losses["loss_giou_dn_0"].item() == pytest.approx(0, abs=1e-7)
    # Logits 0: positives (IoU 1) weigh 1 with BCE(0, 1) = ln 2; the other 6 entries weigh
    # 0.75/4 with BCE(0, 0) = ln 2. Sum / (1 box x 2 groups).
    expected = (2 * math.log(2) + 6 * 0.75 / 4 * math.log(2)) / 2
    assert losses["loss_vfl_dn_0"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_num_boxes_under_torch_distributed(tmp_path):
    # A one-process group exercises the all_reduce / world-size path.
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        full = {"labels": torch.tensor([0, 1, 2]), "boxes": torch.rand(3, 4)}
        assert average_num_boxes([full, full], torch.device("cpu")) == 6.0
    finally:
        dist.destroy_process_group()


# --- losses by name ----------------------------------------------------------------------------

def test_losses_by_name_give_their_terms_of_every_level(fixture):
    """'boxes' alone: the bbox and giou terms of every level, equal to the full criterion's;
    'vfl' alone: the vfl terms. Together they are the official set (checked above)."""
    full = official_criterion(fixture)(fixture["outputs"], fixture["targets"])
    m, c = fixture["matcher"], fixture["criterion"]
    for losses, prefixes in ((("boxes",), ("loss_bbox", "loss_giou")), (("vfl",), ("loss_vfl",))):
        matcher = HungarianMatcher(**m["weights"], alpha=m["alpha"], gamma=m["gamma"])
        criterion = RTDETRCriterion(fixture["num_classes"], matcher, weight_dict=c["weights"],
                                    alpha=c["alpha"], gamma=c["gamma"], losses=losses)
        part = criterion(fixture["outputs"], fixture["targets"])
        assert set(part) == {k for k in full if k.startswith(prefixes)}, losses
        assert all(torch.equal(part[k], full[k]) for k in part)


def test_unknown_loss_names_are_listed_with_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown loss\(es\) 'focal', 'labels'; known: vfl, boxes, mal, local, masks$"):
        RTDETRCriterion(2, HungarianMatcher(), losses=("vfl", "focal", "labels"))
    with pytest.raises(ValueError, match="no losses given; known: vfl, boxes, mal, local, masks"):
        RTDETRCriterion(2, HungarianMatcher(), losses=())
