"""The D-FINE / DEIM terms of the criterion (mal, local: fgl and ddf, union set), checked against
arithmetic written out by hand in this file: plain Python floats and loops over images,
queries, classes, pairs and edges, independent of the criterion's vectorised code."""
from __future__ import annotations

import math

import pytest
import torch

from rtdetr.train import HungarianMatcher, RTDETRCriterion
from rtdetr.train.criterion import union_indices
from rtdetr.train.distribution_losses import fgl_targets

# The criterion runs in float32, the hand arithmetic in float64. Every term sums at most a few
# hundred float32 products, exps and logs of numbers of order 1, so it is off by a few float32
# ulps of those numbers (1.2e-7 each; at most 4e-7 seen here). Hence 1e-6, absolute for the
# small terms (a term of 0.07 made of larger parts is off by 8e-7 relatively), relative for
# the large ones (up to about 5).
TOL = dict(rel=1e-6, abs=1e-6)

DFINE_WEIGHTS = {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_fgl": 0.15, "loss_ddf": 1.5}
B, Q, K, D = 2, 4, 3, 4          # images, queries, classes, denoising queries (1 group, 2 per object)
REG_MAX = 4                      # bins 0..4: W = -4, -2, 0, 2, 4 for up 0.5, reg_scale 4
UP, REG_SCALE = 0.5, 4.0
NUM_LAYERS = 3
LABELS = [[2, 0], [1]]
GT_BOXES = [[[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.5]], [[0.6, 0.4, 0.6, 0.2]]]


class FixedMatcher:
    """Returns the given assignment for each level, recognised by its 'pred_boxes' tensor."""

    def __init__(self):
        self.table = []

    def add(self, level, pairs):
        self.table.append((level["pred_boxes"], [(torch.tensor(q), torch.tensor(g)) for q, g in pairs]))

    def __call__(self, outputs, targets):
        for boxes, indices in self.table:
            if outputs["pred_boxes"] is boxes:
                return indices
        raise KeyError("level without a fixed assignment")


def targets():
    return [{"labels": torch.tensor(labels), "boxes": torch.tensor(boxes)}
            for labels, boxes in zip(LABELS, GT_BOXES)]


def random_boxes(generator, n):
    centre = torch.rand(B, n, 2, generator=generator) * 0.4 + 0.3
    size = torch.rand(B, n, 2, generator=generator) * 0.25 + 0.08
    return torch.cat([centre, size], -1)


def random_level(generator, n, corners=True):
    level = {"pred_logits": torch.randn(B, n, K, generator=generator) * 2,
             "pred_boxes": random_boxes(generator, n)}
    if corners:
        level["pred_corners"] = torch.randn(B, n, 4 * (REG_MAX + 1), generator=generator) * 1.5
    return level


# Fixed assignments of the matched levels: (query_idx, gt_idx) per image. The layers disagree:
# image 0's query 1 goes to object 1 (main, aux_1, enc) or object 0 (pre); object 1 goes to
# query 1 or query 2; image 1's object goes to query 2, or query 1 (pre).
PAIRS = {"main": [([0, 1], [0, 1]), ([2], [0])],
         "aux_0": [([0, 2], [0, 1]), ([2], [0])],
         "aux_1": [([0, 1], [0, 1]), ([2], [0])],
         "pre": [([1, 2], [0, 1]), ([1], [0])],
         "enc": [([3, 1], [0, 1]), ([2], [0])]}
# Their union by hand. Image 0: pair (0,0) 3 times, (1,1) 3, (2,1) 2, (1,0) 1, (3,0) 1; each
# query keeps its most frequent object, so query 1 keeps object 1; order: by count, then query.
# Image 1: (2,0) 4 times, (1,0) once.
UNION = [([0, 1, 2, 3], [0, 1, 1, 0]), ([2, 1], [0, 0])]
DN_PAIRS = [([0, 1], [0, 1]), ([0], [0])]


def dfine_case():
    """Hand-made training outputs of a 3-layer distribution decoder, and its fixed matcher."""
    g = torch.Generator().manual_seed(0)
    ref = random_boxes(g, Q)
    dn_ref = random_boxes(g, D)
    # Small references far from their objects' edges, so that some edge offsets fall below W(0)
    # and beyond W(N): image 1's query 1 (object 0, in the union) and image 0's denoising query 1.
    ref[1, 1] = torch.tensor([0.15, 0.4, 0.1, 0.1])
    dn_ref[0, 1] = torch.tensor([0.5, 0.6, 0.1, 0.1])
    layers = [random_level(g, Q) for _ in range(NUM_LAYERS)]
    dn_layers = [random_level(g, D) for _ in range(NUM_LAYERS)]
    main = layers[-1]
    teacher = {"teacher_corners": main["pred_corners"], "teacher_logits": main["pred_logits"]}
    dn_teacher = {"teacher_corners": dn_layers[-1]["pred_corners"],
                  "teacher_logits": dn_layers[-1]["pred_logits"]}
    outputs = {**main, "ref_points": ref, "up": torch.tensor([UP]), "reg_scale": torch.tensor([REG_SCALE]),
               "aux_outputs": [{**layer, "ref_points": ref, **teacher} for layer in layers[:-1]],
               "pre_outputs": random_level(g, Q, corners=False),
               "enc_aux_outputs": [random_level(g, Q, corners=False)], "enc_meta": {"class_agnostic": False},
               "dn_aux_outputs": [{**layer, "ref_points": dn_ref, **dn_teacher} for layer in dn_layers],
               "dn_pre_outputs": random_level(g, D, corners=False),
               "dn_meta": {"dn_positive_idx": [torch.tensor(q) for q, _ in DN_PAIRS], "dn_num_group": 1,
                           "dn_num_split": [D, Q]}}
    matcher = FixedMatcher()
    matcher.add(outputs, PAIRS["main"])
    for i, aux in enumerate(outputs["aux_outputs"]):
        matcher.add(aux, PAIRS[f"aux_{i}"])
    matcher.add(outputs["pre_outputs"], PAIRS["pre"])
    matcher.add(outputs["enc_aux_outputs"][0], PAIRS["enc"])
    return outputs, matcher


# --- arithmetic by hand ----------------------------------------------------------------------

def to_list(tensor):
    return tensor.detach().double().tolist()


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def bce_with_logits(x, t):
    """-(t log s(x) + (1 - t) log(1 - s(x)))."""
    return -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))


def xyxy(box):
    cx, cy, w, h = box
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def iou_and_giou(a, b):
    ax1, ay1, ax2, ay2 = xyxy(a)
    bx1, by1, bx2, by2 = xyxy(b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union, inter / union - (hull - union) / hull


def pair_list(pairs):
    """[(image, query, gt)] of per-image (queries, gts)."""
    return [(b, q, j) for b, (qs, gs) in enumerate(pairs) for q, j in zip(qs, gs)]


def hand_class(kind, level, pairs, num_boxes, alpha, gamma):
    """Varifocal or matchability-aware loss, summed entry by entry."""
    logits, boxes = to_list(level["pred_logits"]), to_list(level["pred_boxes"])
    positive = {}
    for b, q, j in pair_list(pairs):
        positive[(b, q, LABELS[b][j])] = iou_and_giou(boxes[b][q], GT_BOXES[b][j])[0]
    total = 0.0
    for b in range(len(logits)):
        for q in range(len(logits[b])):
            for k in range(K):
                x = logits[b][q][k]
                p = sigmoid(x)
                if (b, q, k) in positive:
                    iou = positive[(b, q, k)]
                    target, weight = (iou, iou) if kind == "vfl" else (iou ** gamma, 1.0)
                else:
                    target, weight = 0.0, (alpha * p ** gamma if kind == "vfl" else p ** gamma)
                total += weight * bce_with_logits(x, target)
    return total / num_boxes


def hand_boxes(level, pairs, num_boxes):
    boxes = to_list(level["pred_boxes"])
    l1 = giou = 0.0
    for b, q, j in pair_list(pairs):
        l1 += sum(abs(p - t) for p, t in zip(boxes[b][q], GT_BOXES[b][j]))
        giou += 1 - iou_and_giou(boxes[b][q], GT_BOXES[b][j])[1]
    return l1 / num_boxes, giou / num_boxes


def hand_weights(n, up, c):
    """W(0..n) from the formula: a = up, s = (a c + 1) ** (2 / (n - 2))."""
    s = (up * c + 1) ** (2 / (n - 2))
    w = [-2 * up * c]
    w += [1 - s ** (n // 2 - i) for i in range(1, n // 2)]
    w += [0.0]
    w += [s ** (i - n // 2) - 1 for i in range(n // 2 + 1, n)]
    return w + [2 * up * c]


def edge_bins(logits_row, edge):
    return logits_row[edge * (REG_MAX + 1):(edge + 1) * (REG_MAX + 1)]


def cross_entropy(logits, k):
    m = max(logits)
    return m + math.log(sum(math.exp(x - m) for x in logits)) - logits[k]


def hand_edge_target(d, w):
    """(left bin, weight left, weight right, branch) of one edge offset d."""
    n = len(w) - 1
    k = sum(1 for value in w if value <= d) - 1
    if k < 0:
        return 0, 1.0, 0.0, "below"
    if k >= n:
        return n - 1, 0.0, 1.0, "beyond"
    right = (d - w[k]) / (w[k + 1] - w[k])
    return k, 1 - right, right, "inside"


def hand_fgl(level, pairs, num_boxes, branches=None):
    corners, boxes = to_list(level["pred_corners"]), to_list(level["pred_boxes"])
    ref = to_list(level["ref_points"])
    w, c = hand_weights(REG_MAX, UP, REG_SCALE), REG_SCALE
    total = 0.0
    for b, q, j in pair_list(pairs):
        cx, cy, rw, rh = ref[b][q]
        gx1, gy1, gx2, gy2 = xyxy(GT_BOXES[b][j])
        distances = [(cx - gx1) / (rw / c) - c / 2, (cy - gy1) / (rh / c) - c / 2,
                     (gx2 - cx) / (rw / c) - c / 2, (gy2 - cy) / (rh / c) - c / 2]
        iou = iou_and_giou(boxes[b][q], GT_BOXES[b][j])[0]
        for edge, d in enumerate(distances):
            k, w_left, w_right, branch = hand_edge_target(d, w)
            if branches is not None:
                branches.add(branch)
            logits = edge_bins(corners[b][q], edge)
            total += iou * (w_left * cross_entropy(logits, k) + w_right * cross_entropy(logits, k + 1))
    return total / num_boxes


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def hand_ddf_balance(pairs, num_queries):
    """sqrt(8 * count / B) of the matched and unmatched (query, edge) pairs."""
    matched = len({(b, q) for b, q, _ in pair_list(pairs)}) * 4
    unmatched = B * num_queries * 4 - matched
    return math.sqrt(8 * matched / B), math.sqrt(8 * unmatched / B)


def hand_ddf(level, pairs, temperature, balance):
    corners, teacher = to_list(level["pred_corners"]), to_list(level["teacher_corners"])
    teacher_logits, boxes = to_list(level["teacher_logits"]), to_list(level["pred_boxes"])
    matched = {(b, q): iou_and_giou(boxes[b][q], GT_BOXES[b][j])[0] for b, q, j in pair_list(pairs)}
    positives, negatives = [], []
    for b in range(len(corners)):
        for q in range(len(corners[b])):
            weight = matched.get((b, q), max(sigmoid(x) for x in teacher_logits[b][q]))
            for edge in range(4):
                p_teacher = softmax([x / temperature for x in edge_bins(teacher[b][q], edge)])
                p_student = softmax([x / temperature for x in edge_bins(corners[b][q], edge)])
                kl = sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_teacher, p_student))
                (positives if (b, q) in matched else negatives).append(weight * temperature ** 2 * kl)
    mean_pos = sum(positives) / len(positives) if positives else 0.0
    mean_neg = sum(negatives) / len(negatives) if negatives else 0.0
    n_pos, n_neg = balance
    return (mean_pos * n_pos + mean_neg * n_neg) / (n_pos + n_neg)


def hand_losses(outputs, use_union_set, temperature=5.0):
    """Every term of the D-FINE criterion (vfl, boxes, local; DFINE_WEIGHTS), by hand."""
    num_boxes = 3.0
    union_boxes = float(len(pair_list(UNION)))
    weights = DFINE_WEIGHTS
    levels = [("", outputs, PAIRS["main"], "main")]
    levels += [(f"_aux_{i}", aux, PAIRS[f"aux_{i}"], "aux") for i, aux in enumerate(outputs["aux_outputs"])]
    levels += [("_pre", outputs["pre_outputs"], PAIRS["pre"], "pre"),
               ("_enc_0", outputs["enc_aux_outputs"][0], PAIRS["enc"], "enc")]
    expected = {}
    aux_balance = None
    for suffix, level, pairs, kind in levels:
        box_pairs, box_num = (UNION, union_boxes) if use_union_set else (pairs, num_boxes)
        expected["loss_vfl" + suffix] = hand_class("vfl", level, pairs, num_boxes, 0.75, 2.0)
        expected["loss_bbox" + suffix], expected["loss_giou" + suffix] = hand_boxes(level, box_pairs, box_num)
        if kind in ("main", "aux"):
            expected["loss_fgl" + suffix] = hand_fgl(level, box_pairs, box_num)
        if kind == "aux":
            aux_balance = hand_ddf_balance(box_pairs, Q)
            expected["loss_ddf" + suffix] = hand_ddf(level, box_pairs, temperature, aux_balance)
    dn_levels = [(f"_dn_{i}", dn) for i, dn in enumerate(outputs["dn_aux_outputs"])]
    for i, (suffix, level) in enumerate(dn_levels + [("_dn_pre", outputs["dn_pre_outputs"])]):
        dn_num = num_boxes * 1  # one denoising group
        expected["loss_vfl" + suffix] = hand_class("vfl", level, DN_PAIRS, dn_num, 0.75, 2.0)
        expected["loss_bbox" + suffix], expected["loss_giou" + suffix] = hand_boxes(level, DN_PAIRS, dn_num)
        if suffix == "_dn_pre":
            continue
        expected["loss_fgl" + suffix] = hand_fgl(level, DN_PAIRS, dn_num)
        if i < NUM_LAYERS - 1:  # the last denoising layer is its own teacher: no ddf
            # The denoising levels mix their two means with the last aux level's counts.
            expected["loss_ddf" + suffix] = hand_ddf(level, DN_PAIRS, temperature, aux_balance)
    return {name: value * weights[name.split("_")[0] + "_" + name.split("_")[1]]
            for name, value in expected.items()}


# --- the criterion against the hand arithmetic -----------------------------------------------

def dfine_criterion(matcher, **kwargs):
    return RTDETRCriterion(K, matcher, weight_dict=DFINE_WEIGHTS, losses=("vfl", "boxes", "local"), **kwargs)


@pytest.mark.parametrize("use_union_set", [True, False])
def test_dfine_terms_match_hand_arithmetic(use_union_set):
    outputs, matcher = dfine_case()
    losses = dfine_criterion(matcher, use_union_set=use_union_set)(outputs, targets())
    expected = hand_losses(outputs, use_union_set)
    assert len(expected) == 37
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, **TOL), name


def test_hand_case_covers_every_fgl_branch():
    # The matched edges' offsets fall inside the bins, below W(0) and beyond W(N), in the main
    # level (union pairs) and in the denoising levels, so the comparison above exercises all
    # three target rules.
    outputs, _ = dfine_case()
    for level, pairs in ((outputs, UNION), (outputs["dn_aux_outputs"][0], DN_PAIRS)):
        branches = set()
        hand_fgl(level, pairs, 1.0, branches)
        assert branches == {"inside", "below", "beyond"}


def test_union_set_of_disagreeing_layers():
    def indices(pairs):
        return [(torch.tensor(q), torch.tensor(g)) for q, g in pairs]

    union = union_indices([indices(PAIRS[name]) for name in ("main", "aux_0", "aux_1", "pre", "enc")])
    assert [(q.tolist(), g.tolist()) for q, g in union] == UNION
    assert all(q.dtype == g.dtype == torch.int64 for q, g in union)
    # A tie (query 1 paired once with each object) goes to the lower object index; an image
    # without objects gives two empty tensors.
    tie = union_indices([indices([([1, 0], [1, 0]), ([], [])]), indices([([1], [0]), ([], [])])])
    assert [(q.tolist(), g.tolist()) for q, g in tie] == [([0, 1], [0, 0]), ([], [])]


def test_fgl_targets_by_hand():
    # W = -4, -2, 0, 2, 4. Reference box at the origin of size 1 x 1 with reg_scale 4: an edge
    # of the ground truth at distance e from the centre has offset d = e / (1/4) - 2.
    weights = torch.tensor(hand_weights(REG_MAX, UP, REG_SCALE))
    assert weights.tolist() == pytest.approx([-4, -2, 0, 2, 4], abs=1e-6)
    reference = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    # Edges: left at 0.75 (d = 1), top at 0.25 (d = -1), right at 2 (d = 6), bottom at -0.5 (d = -4).
    gt = torch.tensor([[(-0.75 + 2) / 2, (-0.25 + -0.5) / 2, 2 + 0.75, -0.5 + 0.25]])
    got = fgl_targets(reference, gt, weights, torch.tensor([REG_SCALE]))
    assert got.bins[0].tolist() == pytest.approx([2, 1, REG_MAX - 0.1, 0], abs=1e-6)
    assert got.weight_right[0].tolist() == pytest.approx([0.5, 0.5, 1, 0], abs=1e-6)
    assert got.weight_left[0].tolist() == pytest.approx([0.5, 0.5, 0, 1], abs=1e-6)


def test_mal_and_vfl_by_hand():
    # One object of class 1 at (0.3, 0.5, 0.2, 0.2); query 0 predicts it shifted by 0.1 in x:
    # IoU = (0.1 * 0.2) / (2 * 0.04 - 0.02) = 1/3. Query 1 is background.
    x = [[-1.0, 0.5, 2.0], [1.5, -2.0, 0.0]]
    outputs = {"pred_logits": torch.tensor([x]),
               "pred_boxes": torch.tensor([[[0.4, 0.5, 0.2, 0.2], [0.8, 0.5, 0.2, 0.2]]])}
    tgt = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.3, 0.5, 0.2, 0.2]])}]
    iou = 1 / 3

    def bce(x, t, w):
        return w * -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))

    # VFL (alpha 0.75, gamma 2): the positive targets q with weight q; others 0, weight alpha p^2.
    vfl = bce(x[0][1], iou, iou)
    vfl += sum(bce(v, 0, 0.75 * sigmoid(v) ** 2) for v in (x[0][0], x[0][2], *x[1]))
    # MAL (gamma 1.5): the positive targets q^1.5 with weight 1; others 0, weight p^1.5.
    mal = bce(x[0][1], iou ** 1.5, 1.0)
    mal += sum(bce(v, 0, sigmoid(v) ** 1.5) for v in (x[0][0], x[0][2], *x[1]))

    got_vfl = RTDETRCriterion(K, HungarianMatcher(), losses=("vfl",))(outputs, tgt)
    got_mal = RTDETRCriterion(K, HungarianMatcher(), weight_dict={"loss_mal": 1.0}, gamma=1.5,
                              losses=("mal",))(outputs, tgt)
    assert set(got_vfl) == {"loss_vfl"} and set(got_mal) == {"loss_mal"}
    assert got_vfl["loss_vfl"].item() == pytest.approx(vfl, **TOL)
    assert got_mal["loss_mal"].item() == pytest.approx(mal, **TOL)


# --- names, counts, errors -------------------------------------------------------------------

def random_dfine_outputs(num_layers=3, q=10, reg_max=32, seed=1):
    """Training outputs of a distribution decoder (random numbers) for 2 images, 3 objects."""
    g = torch.Generator().manual_seed(seed)

    # Every layer decodes from the same initial boxes (one set for the denoising queries).
    refs = {q: torch.rand(B, q, 4, generator=g) * 0.3 + 0.2, D: torch.rand(B, D, 4, generator=g) * 0.3 + 0.2}

    def level(n, corners=True):
        out = {"pred_logits": torch.randn(B, n, K, generator=g),
               "pred_boxes": torch.rand(B, n, 4, generator=g) * 0.3 + 0.2}
        if corners:
            out["pred_corners"] = torch.randn(B, n, 4 * (reg_max + 1), generator=g)
            out["ref_points"] = refs[n]
        return out

    layers, dn_layers = [level(q) for _ in range(num_layers)], [level(D) for _ in range(num_layers)]
    teacher = {"teacher_corners": layers[-1]["pred_corners"], "teacher_logits": layers[-1]["pred_logits"]}
    dn_teacher = {"teacher_corners": dn_layers[-1]["pred_corners"],
                  "teacher_logits": dn_layers[-1]["pred_logits"]}
    return {**layers[-1], "up": torch.tensor([0.5]), "reg_scale": torch.tensor([4.0]),
            "aux_outputs": [{**layer, **teacher} for layer in layers[:-1]],
            "pre_outputs": level(q, corners=False),
            "enc_aux_outputs": [level(q, corners=False)], "enc_meta": {"class_agnostic": False},
            "dn_aux_outputs": [{**layer, **dn_teacher} for layer in dn_layers],
            "dn_pre_outputs": level(D, corners=False),
            "dn_meta": {"dn_positive_idx": [torch.tensor([0, 1]), torch.tensor([0])], "dn_num_group": 1,
                        "dn_num_split": [D, q]}}


def test_dfine_s_has_the_official_37_terms():
    outputs = random_dfine_outputs()
    losses = dfine_criterion(HungarianMatcher(), use_union_set=True)(outputs, targets())
    base = ["loss_vfl", "loss_bbox", "loss_giou"]
    expected = base + ["loss_fgl"]
    for suffix in ("_aux_0", "_aux_1", "_dn_0", "_dn_1"):
        expected += [name + suffix for name in base + ["loss_fgl", "loss_ddf"]]
    expected += [name + "_dn_2" for name in base + ["loss_fgl"]]
    for suffix in ("_pre", "_enc_0", "_dn_pre"):
        expected += [name + suffix for name in base]
    assert len(expected) == 37
    assert sorted(losses) == sorted(expected)
    assert all(torch.isfinite(v) for v in losses.values())


def test_ddf_is_skipped_for_layers_equal_to_their_teacher():
    # At initialisation every layer's corners are equal: no distillation term anywhere.
    outputs = random_dfine_outputs()
    for level in outputs["aux_outputs"] + outputs["dn_aux_outputs"]:
        level["pred_corners"] = level["teacher_corners"].clone()
    losses = dfine_criterion(HungarianMatcher(), use_union_set=True)(outputs, targets())
    assert len(losses) == 33 and not any(name.startswith("loss_ddf") for name in losses)


def test_without_local_the_corners_are_ignored():
    outputs = random_dfine_outputs()
    losses = RTDETRCriterion(K, HungarianMatcher(), losses=("vfl", "boxes"))(outputs, targets())
    assert len(losses) == 9 * 3  # 9 levels x (vfl, bbox, giou)


def test_local_without_corners_is_a_value_error():
    outputs = random_dfine_outputs()
    plain = {key: outputs[key] for key in ("pred_logits", "pred_boxes")}
    criterion = dfine_criterion(HungarianMatcher())
    with pytest.raises(ValueError, match=r"^loss 'local' needs 'pred_corners', 'up', 'reg_scale' in the outputs"):
        criterion(plain, targets())
    del outputs["aux_outputs"][1]["teacher_logits"]
    with pytest.raises(ValueError, match=r"^loss 'local' needs 'teacher_logits' in level '_aux_1'") as error:
        criterion(outputs, targets())
    assert "\n" not in str(error.value)


def test_dfine_losses_backpropagate_into_corners():
    outputs = random_dfine_outputs(seed=2)
    corners = [outputs["pred_corners"]] + [level["pred_corners"] for level in outputs["aux_outputs"]]
    for tensor in corners:
        tensor.requires_grad_()
    losses = dfine_criterion(HungarianMatcher(), use_union_set=True)(outputs, targets())
    sum(losses.values()).backward()
    for tensor in corners:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_nans_are_not_hidden():
    outputs = random_dfine_outputs()
    # A NaN logit of a denoising query (not matched, so the matcher never sees it).
    outputs["dn_aux_outputs"][0]["pred_logits"][0, 0, 0] = float("nan")
    losses = dfine_criterion(HungarianMatcher(), use_union_set=True)(outputs, targets())
    assert math.isnan(losses["loss_vfl_dn_0"].item())
