"""Mask ("segm") evaluation: cross-checked against pycocotools' COCOeval on a hand-made case,
the box numbers left as they were, the 100-best rule, the inputs refused, the result's printing,
and the evaluation loop pasting mask logits.

The ground truth mixes polygons, compressed and uncompressed RLE and a crowd RLE; predicted
masks overlap their objects partly, one object is missed, one mask is a false positive.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from rtdetr.core.masks import decode_rle, encode_rle, segmentation_to_mask
from rtdetr.eval import CocoEvaluator, EvalResult
from rtdetr.eval.result import SUMMARY
from rtdetr.eval.validate import evaluate, with_mask_rles
from rtdetr.models.postprocess import paste_masks
from tests.eval.test_coco_eval import distributed_worker

CATEGORY_IDS = [5, 9]                      # label 0 -> "cat" (5), label 1 -> "dog" (9)
H, W = 160, 200


def rect(x1, y1, x2, y2, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def disc(cx, cy, r, h=H, w=W) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, zeros first), written out here."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def make_case():
    """Ground truth (4 images) and detections with masks, as CocoEvaluator takes them."""
    triangle = [[10.0, 10.0, 190.0, 10.0, 10.0, 150.0]]                 # large polygon (image 1)
    two_parts = [[130, 30, 160, 30, 160, 60, 130, 60], [165, 35, 185, 35, 185, 55, 165, 55]]
    objects = [  # (image, category, segmentation, iscrowd)
        (1, 5, triangle, 0),
        (1, 9, two_parts, 0),                                            # one object of 2 polygons
        (1, 9, encode_rle(disc(60, 140, 8))[0], 0),                      # small, compressed RLE
        (2, 5, uncompressed_rle(rect(10, 10, 70, 60)), 0),               # medium, uncompressed RLE
        (2, 5, encode_rle(rect(100, 20, 190, 150))[0], 1),               # crowd region
        (2, 9, [[20, 90, 60, 90, 60, 140, 20, 140]], 0),
        (3, 9, encode_rle(disc(100, 80, 30))[0], 0),                     # never detected: a miss
    ]
    images = [{"id": i, "width": W, "height": H, "file_name": f"{i}.png"} for i in (1, 2, 3, 4)]
    annotations, gt_masks = [], []
    for n, (image_id, cid, seg, crowd) in enumerate(objects, start=1):
        m = segmentation_to_mask(seg, H, W)
        gt_masks.append(m)
        annotations.append({"id": n, "image_id": image_id, "category_id": cid, "segmentation": seg,
                            "bbox": box_of(m), "area": float(m.sum()), "iscrowd": crowd})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]}

    g = gt_masks
    rows = {  # image -> [(label, mask, score)]
        1: [(0, np.roll(g[0], 6, axis=1), 0.9),                           # IoU ~0.8
            (1, g[1] & ~rect(175, 0, W, H), 0.8),                         # one part and a bit: IoU ~0.67
            (1, np.roll(g[2], 3, axis=0), 0.6),                           # small, shifted
            (0, g[2], 0.3)],                                              # right mask, wrong class
        2: [(0, np.roll(g[3], (4, 5), axis=(0, 1)), 0.7),
            (0, rect(120, 40, 170, 100), 0.95),                           # inside the crowd region
            (1, np.roll(g[5], 15, axis=0), 0.5)],                         # IoU ~0.5
        3: [],
        4: [(1, disc(50, 50, 20), 0.85)],                                 # false positive
    }
    image_ids, detections = [], []
    for image_id, dets in rows.items():
        masks = np.stack([m for _, m, _ in dets]) if dets else np.zeros((0, H, W), bool)
        boxes = [box_of(m) for _, m, _ in dets]
        image_ids.append(image_id)
        detections.append({
            "labels": torch.tensor([lab for lab, _, _ in dets], dtype=torch.int64),
            "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([s for _, _, s in dets], dtype=torch.float32),
            "masks": torch.from_numpy(masks)})
    return gt, image_ids, detections


def segm_results(image_ids, detections) -> list[dict]:
    """The detections in COCO's segm results format, encoded by pycocotools itself."""
    from pycocotools import mask as pc_mask
    results = []
    for image_id, det in zip(image_ids, detections):
        for label, mask, score in zip(det["labels"].tolist(), det["masks"].numpy(), det["scores"].tolist()):
            rle = pc_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            results.append({"image_id": image_id, "category_id": CATEGORY_IDS[label],
                            "segmentation": rle, "score": score})
    return results


def pycocotools_segm(gt: dict, results: list[dict], image_ids: list[int] | None = None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "segm")
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def run(gt, image_ids, detections, **kw) -> EvalResult:
    evaluator = CocoEvaluator(gt, CATEGORY_IDS, **kw)
    evaluator.update(image_ids, detections)
    return evaluator.compute()


def without_masks(detections):
    return [{k: v for k, v in d.items() if k != "masks"} for d in detections]


# ---------------------------------------------------------------- against pycocotools


def test_segm_agrees_with_pycocotools():
    gt, image_ids, detections = make_case()
    ours = run(gt, image_ids, detections)
    reference = pycocotools_segm(gt, segm_results(image_ids, detections))
    assert ours.segm is not None
    assert np.allclose(ours.segm.stats, reference.stats, atol=1e-6), \
        dict(zip([s[0] for s in SUMMARY], np.array(ours.segm.stats) - reference.stats))
    # a non-trivial case: partial matches, every area range, AP below 1 and above 0
    assert 0.2 < ours.segm.ap < 0.9 and min(ours.segm.stats[3:6]) > -1 and ours.segm.ap != ours.ap
    precision = reference.eval["precision"]
    for k, (cid, name) in enumerate([(5, "cat"), (9, "dog")]):
        p = precision[:, :, k, 0, -1]
        got = ours.segm.per_class[name]
        assert (got.ap, got.ap50) == pytest.approx((p[p > -1].mean(), p[0][p[0] > -1].mean()), abs=1e-6)
        assert got.num_gt == ours.per_class[name].num_gt and got.category_id == cid
    assert ours.segm.per_class["cat"].num_gt == 2 and ours.segm.per_class["dog"].num_gt == 4  # crowd left out


def test_rle_detections_score_as_masks_do():
    gt, image_ids, detections = make_case()
    as_rles = [{**without_masks([d])[0], "rles": encode_rle(d["masks"].numpy())} for d in detections]
    assert run(gt, image_ids, as_rles).segm == run(gt, image_ids, detections).segm


def test_box_numbers_unchanged_by_masks():
    gt, image_ids, detections = make_case()
    with_segm = run(gt, image_ids, detections)
    boxes_only = run(gt, image_ids, without_masks(detections))
    assert boxes_only.segm is None and with_segm.segm is not None
    assert with_segm.stats == boxes_only.stats and with_segm.per_class == boxes_only.per_class
    gt_plain = copy.deepcopy(gt)
    for a in gt_plain["annotations"]:
        del a["segmentation"]
    no_gt_masks = run(gt_plain, image_ids, detections)                 # masks given, nothing to score them on
    assert no_gt_masks.segm is None and no_gt_masks.stats == boxes_only.stats
    assert run(gt, image_ids, detections, iou_types=("bbox",)).segm is None


def test_the_100_best_masks_per_image_are_kept():
    gt, _, _ = make_case()
    rng = np.random.default_rng(0)
    masks = np.stack([np.roll(disc(100, 80, 30), (int(dy), int(dx)), axis=(0, 1))
                      for dy, dx in rng.integers(-25, 25, size=(150, 2))])
    scores = torch.from_numpy(rng.permutation(150) / 150 + 0.001).float()
    det = {"labels": torch.ones(150, dtype=torch.int64), "boxes": torch.tensor([[70.0, 50, 130, 110]] * 150),
           "scores": scores, "masks": torch.from_numpy(masks)}
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update([3], [det])
    rows, rles = evaluator._detections[3].masks
    best = torch.argsort(scores, descending=True)[:100].numpy()
    assert len(rles) == 100 and rows.tolist() == best.tolist()
    assert (decode_rle(rles) == masks[best]).all()
    top = {k: v[best] for k, v in det.items()}
    reference = pycocotools_segm(gt, segm_results([3], [top]), image_ids=[3])
    r = evaluator.compute()
    assert np.allclose(r.segm.stats, reference.stats, atol=1e-6) and 0 < r.segm.ap < 1
    everything = CocoEvaluator(gt, CATEGORY_IDS, segm_max_dets=None)
    everything.update([3], [det])
    assert len(everything._detections[3].masks[1]) == 150


# ---------------------------------------------------------------- switching on, and refusing


def test_segm_request_needs_ground_truth_segmentations():
    gt, image_ids, detections = make_case()
    for a in gt["annotations"]:
        del a["segmentation"]
    with pytest.raises(ValueError, match="no ground-truth annotation has a segmentation") as e:
        CocoEvaluator(gt, CATEGORY_IDS, iou_types=("bbox", "segm"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="iou_types must be"):
        CocoEvaluator(gt, CATEGORY_IDS, iou_types=("segm",))


def test_bad_masks_are_refused():
    gt, image_ids, detections = make_case()
    det = detections[0]
    explicit = CocoEvaluator(gt, CATEGORY_IDS, iou_types=("bbox", "segm"))
    with pytest.raises(ValueError, match="carry no 'masks' or 'rles'"):
        explicit.update([1], without_masks([det]))
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    with pytest.raises(ValueError, match=r"masks of 80x100 for an image of 160x200"):
        evaluator.update([1], [{**det, "masks": det["masks"][:, ::2, ::2]}])
    with pytest.raises(ValueError, match="must be bool"):
        evaluator.update([1], [{**det, "masks": det["masks"].float()}])
    with pytest.raises(ValueError, match=r"masks must be \[4, H, W\]"):
        evaluator.update([1], [{**det, "masks": det["masks"][:2]}])
    with pytest.raises(ValueError, match="3 rles for 4 detections"):
        evaluator.update([1], [{**without_masks([det])[0], "rles": [None] * 3}])
    evaluator.update(image_ids[:1], detections[:1])
    evaluator.update(image_ids[1:2], without_masks(detections[1:2]))
    with pytest.raises(ValueError, match="without masks"):
        evaluator.compute()


def test_detections_without_a_mask_are_left_out_of_segm():
    gt, image_ids, detections = make_case()
    det = detections[0]
    rles = encode_rle(det["masks"].numpy())
    partial = {**without_masks([det])[0], "rles": [rles[0], None, rles[2], None]}
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update([1], [partial])
    rows, kept = evaluator._detections[1].masks
    assert rows.tolist() == [0, 2] and kept == [rles[0], rles[2]]


# ---------------------------------------------------------------- output


def test_result_with_masks_prints_and_round_trips():
    gt, image_ids, detections = make_case()
    r = run(gt, image_ids, detections)
    lines = r.summary().splitlines()
    assert len(lines) == 26 and lines[0] == "IoU metric: bbox" and lines[13] == "IoU metric: segm"
    assert lines[14].endswith(f"= {r.segm.ap:0.3f}") and lines[1].endswith(f"= {r.ap:0.3f}")
    table = r.table().splitlines()
    assert table[0].split() == ["class", "id", "boxes", "AP", "AP50", "maskAP", "maskAP50"]
    assert table[1].split() == ["cat", "5", "2", f"{r.per_class['cat'].ap:.3f}", f"{r.per_class['cat'].ap50:.3f}",
                                f"{r.segm.per_class['cat'].ap:.3f}", f"{r.segm.per_class['cat'].ap50:.3f}"]
    assert table[-1].split()[-2:] == [f"{r.segm.ap:.3f}", f"{r.segm.ap50:.3f}"]
    saved = json.loads(json.dumps(r.to_dict()))
    assert "segm" not in saved["segm"] and saved["segm"]["ap"] == r.segm.ap
    assert EvalResult.from_dict(saved) == r
    boxes_only = run(gt, image_ids, without_masks(detections))
    assert "segm" not in boxes_only.to_dict() and len(boxes_only.summary().splitlines()) == 12


# ---------------------------------------------------------------- distributed


def test_distributed_gather_carries_the_masks(tmp_path):
    gt, image_ids, detections = make_case()
    shards = [(image_ids[0::2], detections[0::2]), (image_ids[1::2], detections[1::2])]
    out_file = tmp_path / "result.json"
    mp.start_processes(distributed_worker, args=(2, str(tmp_path / "init"), str(out_file), gt, shards, CATEGORY_IDS),
                       nprocs=2, start_method="spawn")
    gathered = EvalResult.from_dict(json.loads(out_file.read_text()))
    assert gathered == run(gt, image_ids, detections) and gathered.segm is not None


def test_what_is_gathered_is_rle_only():
    gt, image_ids, detections = make_case()
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update(image_ids, detections)
    payload = pickle.dumps(evaluator._detections)
    assert len(payload) < 5000                                      # 8 masks of 160x200 are 256 kB as pixels


# ---------------------------------------------------------------- the evaluation loop


class MaskLogitModel:
    """An exported-graph stand-in whose detections carry known mask logits at 1/4 of a 64x64 input."""

    postprocessed = True

    def __init__(self, detections: dict[int, dict]):
        self.detections = detections

    def eval(self):
        return self

    def detect(self, images, sizes_wh):
        return [self.detections[int(i)] for i in images[:, 0, 0, 0].tolist()]


def test_evaluate_pastes_mask_logits():
    gt, image_ids, _ = make_case()
    rng = np.random.default_rng(3)
    dets = {}
    for image_id in image_ids:
        k = 130 if image_id == 1 else 3                              # image 1: more than 100 detections
        logits = torch.from_numpy(rng.normal(0, 1, size=(k, 16, 16))).float()
        logits[:, 4:12, 4:12] += 3
        dets[image_id] = {"labels": torch.from_numpy(rng.integers(0, 2, size=k)),
                          "boxes": torch.tensor([[40.0, 30, 160, 130]]).repeat(k, 1),
                          "scores": torch.from_numpy(rng.random(k)).float(), "masks": logits}
    images = torch.tensor(image_ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 64, 64)
    targets = [{"image_id": torch.tensor(i), "orig_size": torch.tensor([W, H])} for i in image_ids]
    loader = [(images[:2], targets[:2]), (images[2:], targets[2:])]
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    result = evaluate(MaskLogitModel(dets), loader, evaluator, torch.device("cpu"))

    by_hand = CocoEvaluator(gt, CATEGORY_IDS)
    for image_id, d in dets.items():
        best = torch.argsort(d["scores"], descending=True, stable=True)[:100]
        rles = [None] * len(d["scores"])
        for row, rle in zip(best.tolist(), encode_rle(paste_masks(d["masks"][best], (H, W)).numpy())):
            rles[row] = rle
        by_hand.update([image_id], [{**{k: v for k, v in d.items() if k != "masks"}, "rles": rles}])
    assert result == by_hand.compute() and result.segm is not None
    assert len(evaluator._detections[1].masks[1]) == 100


def test_with_mask_rles_leaves_detection_models_alone():
    whole = torch.tensor([[0.0, 0.0, W, H]] * 2)  # boxes over the whole picture: the crop clears nothing
    det = {"labels": torch.zeros(2, dtype=torch.int64), "boxes": whole, "scores": torch.tensor([0.9, 0.1])}
    assert with_mask_rles(det, torch.tensor([W, H])) is det
    logits = torch.full((2, 40, 50), -5.0)
    logits[1, 10:20, 10:30] = 5.0
    out = with_mask_rles({**det, "masks": logits}, torch.tensor([W, H]), limit=1)
    assert "masks" not in out and out["rles"][1] is None               # only the best (row 0) pasted
    assert out["rles"][0]["size"] == [H, W] and not decode_rle(out["rles"][0]).any()
    out = with_mask_rles({**det, "masks": logits}, torch.tensor([W, H]))
    pasted = decode_rle(out["rles"][1])
    inside, around = np.zeros((H, W), bool), np.ones((H, W), bool)  # 1/4 resolution, stretched x4
    inside[41:79, 41:119] = True
    around[39:81, 39:121] = False
    assert pasted[inside].all() and not pasted[around].any() and 40 * 80 - 8 <= pasted.sum() <= 40 * 80
    # Masks are cropped to their boxes, as prediction crops them.
    half = {**det, "masks": logits, "boxes": torch.tensor([[0.0, 0.0, W, H], [0.0, 0.0, 80.0, H]])}
    cropped = decode_rle(with_mask_rles(half, torch.tensor([W, H]))["rles"][1])
    assert cropped.sum() > 0 and not cropped[:, 80:].any() and (cropped == pasted & (np.arange(W) < 80)[None]).all()


def test_encode_rle_is_cocos_rle():
    from faster_coco_eval.core import mask as coco_mask
    rng = np.random.default_rng(5)
    masks = rng.random((4, 37, 23)) > 0.6
    masks[2] = False
    cocos = [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}
             for r in coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))]
    assert encode_rle(masks) == cocos
    assert encode_rle(torch.from_numpy(masks)) == cocos
    assert encode_rle(torch.from_numpy(masks).to(torch.uint8)) == cocos
    assert encode_rle(masks[0]) == cocos[:1]
    assert encode_rle(torch.zeros((0, 5, 6), dtype=torch.bool)) == []


def test_validate_scores_a_segmentation_model_on_masks(tmp_path):
    """Plumbing through a real (randomly initialised) segmentation model and a synthetic data set."""
    import rtdetr
    from rtdetr.data.synthetic import make_synthetic_dataset
    from rtdetr.eval.validate import is_segmentation_model, validate
    root = make_synthetic_dataset(tmp_path / "shapes", num_train=1, num_val=3, image_size=(64, 96))
    torch.manual_seed(0)
    model = rtdetr.load_model("demo_seg", weights=None)
    assert is_segmentation_model(model.model)
    result = validate(model, root, "val", imgsz=160, batch=3, workers=0)
    assert result.segm is not None and result.segm.num_images == result.num_images == 3
    assert -1 <= result.segm.ap <= 1 and set(result.segm.per_class) == set(result.per_class)
    boxes_only = validate(rtdetr.load_model("demo", weights=None), root, "val", imgsz=160, batch=3, workers=0)
    assert boxes_only.segm is None and "segm" not in boxes_only.to_dict()
