"""CocoEvaluator: cross-checked against pycocotools, plus cases whose AP is worked out by hand.

Ground truths are built here: boxes [x, y, w, h] in pixels, categories with non-contiguous ids.
Detections are what `rtdetr.postprocess` returns: labels 0..K-1, xyxy pixel boxes, scores.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rtdetr.core.distributed import is_main
from rtdetr.eval import CocoEvaluator, EvalResult
from rtdetr.eval.result import SUMMARY

# label -> category id; 99 has no ground truth at all
CATEGORY_IDS = [3, 17, 42, 99]
NAMES = {3: "cat", 17: "dog", 42: "kite", 99: "unused"}
WIDTH, HEIGHT = 640, 480


# ---------------------------------------------------------------- building ground truth and detections


def make_ground_truth(num_images: int = 20, seed: int = 0) -> dict:
    """Images 1..num_images; image 1 has no objects, image 2 a crowd box; sizes small to large.

    Areas are 60-100 % of the box (as segmentation areas are), so COCO's area ranges use `area`.
    """
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": WIDTH, "height": HEIGHT, "file_name": f"{i}.jpg"}
              for i in range(1, num_images + 1)]
    annotations = []

    def add(image_id, cid, x, y, w, h, area, iscrowd=0):
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cid,
                            "bbox": [x, y, w, h], "area": area, "iscrowd": iscrowd})

    add(2, 3, 300.0, 100.0, 250.0, 200.0, 40000.0, iscrowd=1)
    for image_id in range(2, num_images + 1):
        for _ in range(rng.integers(1, 7)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(300), size=2)).round(1)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            add(image_id, int(rng.choice(CATEGORY_IDS[:3])), round(x, 2), round(y, 2), w, h,
                round(float(w * h * rng.uniform(0.6, 1.0)), 2))
    categories = [{"id": cid, "name": NAMES[cid]} for cid in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection(rows: list[tuple[int, float, float, float, float, float]]) -> dict:
    """One image's detections from (label, x1, y1, x2, y2, score) rows."""
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)
    return {"labels": t[:, 0].long(), "boxes": t[:, 1:5].float(), "scores": t[:, 5].float()}


def noisy_detections(gt: dict, seed: int = 1) -> tuple[list[int], list[dict]]:
    """Jittered boxes for ~80 % of the objects (~10 % with the wrong class), false positives
    everywhere (class 99 included), detections on the crowd box, 120 detections on one image."""
    rng = np.random.default_rng(seed)
    image_ids = [im["id"] for im in gt["images"]]
    rows = {i: [] for i in image_ids}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        if a["iscrowd"]:
            rows[a["image_id"]] += [(0, x + 10, y + 10, x + 60, y + 50, 0.95),
                                    (1, x + 100, y, x + 200, y + 90, 0.5)]
            continue
        if rng.random() < 0.2:
            continue
        label = CATEGORY_IDS.index(a["category_id"]) if rng.random() < 0.9 else int(rng.integers(0, 3))
        dx1, dy1, dx2, dy2 = rng.normal(0, 0.08, size=4) * [w, h, w, h]
        rows[a["image_id"]].append((label, x + dx1, y + dy1, x + w + dx2, y + h + dy2, rng.uniform(0.3, 1)))
    for image_id in image_ids:
        count = 120 if image_id == 3 else int(rng.integers(0, 4))
        for _ in range(count):
            x1, y1 = rng.uniform(0, WIDTH - 20), rng.uniform(0, HEIGHT - 20)
            x2, y2 = x1 + rng.uniform(4, 200), y1 + rng.uniform(4, 200)
            rows[image_id].append((int(rng.integers(0, 4)), x1, y1, x2, y2, rng.uniform(0, 0.7)))
    return image_ids, [detection(rows[i]) for i in image_ids]


def coco_results(image_ids: list[int], detections: list[dict]) -> list[dict]:
    """The detections as a COCO results list (category ids, [x, y, w, h]), for pycocotools."""
    results = []
    for image_id, det in zip(image_ids, detections):
        for label, (x1, y1, x2, y2), score in zip(det["labels"].tolist(), det["boxes"].double().tolist(),
                                                   det["scores"].double().tolist()):
            results.append({"image_id": image_id, "category_id": CATEGORY_IDS[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results


def pycocotools_eval(gt: dict, results: list[dict]):
    """pycocotools' COCOeval after evaluate/accumulate/summarize (its printing swallowed)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def evaluate(gt: dict, image_ids: list[int], detections: list[dict], category_ids=CATEGORY_IDS) -> EvalResult:
    evaluator = CocoEvaluator(gt, category_ids)
    evaluator.update(image_ids, detections)
    return evaluator.compute()


def one_object_gt(box=(100.0, 50.0, 200.0, 150.0), category_id=42, extra_images=0) -> dict:
    """Image 1 with one (large) object `box` [x, y, w, h]; images 2.. without objects."""
    x, y, w, h = box
    return {"images": [{"id": i} for i in range(1, 2 + extra_images)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": category_id, "bbox": list(box),
                             "area": w * h, "iscrowd": 0}],
            "categories": [{"id": cid, "name": NAMES[cid]} for cid in CATEGORY_IDS]}


EMPTY = detection([])


# ---------------------------------------------------------------- against pycocotools


def test_agrees_with_pycocotools():
    gt = make_ground_truth()
    image_ids, detections = noisy_detections(gt)
    ours = evaluate(gt, image_ids, detections)
    reference = pycocotools_eval(gt, coco_results(image_ids, detections))

    differences = np.abs(np.array(ours.stats) - reference.stats)
    print(f"max difference faster-coco-eval vs pycocotools: {differences.max():.2e}")
    assert differences.max() < 1e-4, dict(zip([s[0] for s in SUMMARY], differences))
    assert 0.2 < ours.ap < 0.9 and ours.ap_small > -1 and ours.ap_large > -1  # a non-trivial case

    precision = reference.eval["precision"]  # [T, R, K, A, M]
    for k, cid in enumerate(reference.params.catIds):
        p = precision[:, :, k, 0, -1]
        expected = (p[p > -1].mean(), p[0][p[0] > -1].mean()) if (p > -1).any() else (-1, -1)
        got = ours.per_class[NAMES[cid]]
        assert (got.ap, got.ap50) == pytest.approx(expected, abs=1e-4)
    assert ours.per_class["unused"].ap == -1 and ours.per_class["unused"].num_gt == 0


# ---------------------------------------------------------------- worked out by hand


def test_perfect_detections_score_one():
    gt = make_ground_truth()
    image_ids = [im["id"] for im in gt["images"]]
    rows = {i: [] for i in image_ids}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        if not a["iscrowd"]:
            rows[a["image_id"]].append((CATEGORY_IDS.index(a["category_id"]), x, y, x + w, y + h, 0.9))
    r = evaluate(gt, image_ids, [detection(rows[i]) for i in image_ids])
    for name in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100",
                 "ar_small", "ar_medium", "ar_large"):
        assert getattr(r, name) == pytest.approx(1.0), name
    assert [c.ap for c in r.per_class.values()] == pytest.approx([1, 1, 1, -1])


def test_no_detections_score_zero():
    gt = make_ground_truth()
    image_ids = [im["id"] for im in gt["images"]]
    r = evaluate(gt, image_ids, [EMPTY] * len(image_ids))
    assert r.stats == [0.0] * 12
    assert [c.ap for c in r.per_class.values()] == [0, 0, 0, -1]


def test_iou_between_050_and_055_counts_for_ap50_only():
    # detection: the object's top 52 % -> IoU 0.52: matched at threshold 0.50 only (1 of 10)
    gt = one_object_gt(box=(100.0, 50.0, 200.0, 150.0))
    r = evaluate(gt, [1], [detection([(2, 100, 50, 300, 50 + 0.52 * 150, 0.8)])])
    assert (r.ap50, r.ap75, r.ap) == pytest.approx((1.0, 0.0, 0.1))
    assert (r.ap_large, r.ar100) == pytest.approx((0.1, 0.1))
    assert r.ap_small == r.ap_medium == -1  # no ground truth of those sizes


def test_precision_recall_curve_by_hand():
    # 2 objects; by score: hit, miss, hit -> precision 1 up to recall 0.5, then 2/3 up to 1.0.
    # COCO samples 101 recall points: 51 at precision 1 (0.00..0.50), 50 at 2/3 (0.51..1.00).
    gt = one_object_gt(box=(10.0, 10.0, 100.0, 100.0))
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 42, "bbox": [300.0, 10.0, 50.0, 80.0],
                              "area": 4000.0, "iscrowd": 0})
    dets = detection([(2, 10, 10, 110, 110, 0.9), (2, 200, 200, 250, 250, 0.8), (2, 300, 10, 350, 90, 0.7)])
    r = evaluate(gt, [1], [dets])
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert (r.ap, r.ap50, r.ap75) == pytest.approx((expected,) * 3)
    assert (r.ar1, r.ar10) == pytest.approx((0.5, 1.0))


def test_labels_are_mapped_to_category_ids():
    gt = one_object_gt(category_id=42)
    box = (100, 50, 300, 200)
    right = evaluate(gt, [1], [detection([(0, *box, 0.9)])], category_ids=[42, 3, 17, 99])
    assert right.ap == pytest.approx(1.0) and right.per_class["kite"].ap == pytest.approx(1.0)
    wrong = evaluate(gt, [1], [detection([(1, *box, 0.9)])], category_ids=[42, 3, 17, 99])
    assert wrong.ap == 0.0 and wrong.per_class["kite"].ap == 0.0 and wrong.per_class["cat"].ap == -1


def test_default_category_ids_are_the_sorted_ids():
    gt = one_object_gt(category_id=42)
    gt["categories"].reverse()
    evaluator = CocoEvaluator(gt)
    assert evaluator.category_ids == [3, 17, 42, 99]
    evaluator.update([1], [detection([(2, 100, 50, 300, 200, 0.9)])])
    assert evaluator.compute().ap == pytest.approx(1.0)


def test_false_positive_on_an_image_without_objects():
    # image 2 has no objects; its detection outscores the hit: precision 1/2 at recall 1
    gt = one_object_gt(extra_images=1)
    r = evaluate(gt, [1, 2], [detection([(2, 100, 50, 300, 200, 0.5)]), detection([(2, 0, 0, 50, 50, 0.9)])])
    assert r.ap == pytest.approx(0.5) and r.num_images == 2


def test_only_the_images_given_are_evaluated():
    # image 2 holds an object but is never given: it counts neither as found nor as missed
    gt = one_object_gt(extra_images=1)
    gt["annotations"].append({"id": 2, "image_id": 2, "category_id": 42, "bbox": [0, 0, 50, 50],
                              "area": 2500, "iscrowd": 0})
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update([torch.tensor(1)], [detection([(2, 100, 50, 300, 200, 0.5)])])
    r = evaluator.compute()
    assert r.ap == pytest.approx(1.0) and r.num_images == 1 and r.per_class["kite"].num_gt == 1
    evaluator.update([2], [EMPTY])
    assert evaluator.compute().ar100 == pytest.approx(0.5)
    evaluator.reset()
    assert evaluator.compute().ap == 0.0  # nothing given: every image, no detections


def test_crowd_boxes_neither_reward_nor_penalise():
    gt = one_object_gt()
    gt["annotations"][0]["iscrowd"] = 1
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 42, "bbox": [400, 300, 40, 40],
                              "area": 1600, "iscrowd": 0})
    on_crowd = (2, 110, 60, 200, 150, 0.9)  # inside the crowd region, highest score
    r = evaluate(gt, [1], [detection([on_crowd, (2, 400, 300, 440, 340, 0.5)])])
    assert r.ap == pytest.approx(1.0) and r.per_class["kite"].num_gt == 1


def test_irregular_ground_truth_is_accepted():
    # annotation id 0, no area (-> w * h), no iscrowd, category without a name
    gt = {"images": [{"id": 7}], "categories": [{"id": 5}],
          "annotations": [{"id": 0, "image_id": 7, "category_id": 5, "bbox": [0, 0, 20, 20]}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate(gt, [7], [detection([(0, 0, 0, 20, 20, 0.9)])], category_ids=[5])
    assert r.ap_small == pytest.approx(1.0) and list(r.per_class) == ["5"]
    assert gt["annotations"][0] == {"id": 0, "image_id": 7, "category_id": 5, "bbox": [0, 0, 20, 20]}


def test_bad_input_is_refused():
    evaluator = CocoEvaluator(one_object_gt(), CATEGORY_IDS)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.update([5], [EMPTY])
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        evaluator.update([1], [detection([(42, 0, 0, 10, 10, 0.9)])])
    with pytest.raises(ValueError, match="image ids for"):
        evaluator.update([1, 2], [EMPTY])


# ---------------------------------------------------------------- output


def test_quiet_and_printable(capsys):
    gt = make_ground_truth(num_images=5)
    image_ids, detections = noisy_detections(gt)
    r = evaluate(gt, image_ids, detections)
    assert capsys.readouterr().out == ""

    summary = r.summary().splitlines()
    assert len(summary) == 12
    assert summary[0] == (" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] "
                          f"= {r.ap:0.3f}")
    table = r.table().splitlines()
    assert table[0].split() == ["class", "id", "boxes", "AP", "AP50"]
    assert [row.split()[0] for row in table[1:]] == ["cat", "dog", "kite", "unused", "all"]
    assert table[4].split()[-2:] == ["-", "-"]
    saved = json.loads(json.dumps(r.to_dict()))
    assert saved["per_class"]["kite"]["category_id"] == 42
    assert EvalResult.from_dict(saved) == r


def test_from_dataset():
    class Dataset:  # the two things CocoEvaluator.from_dataset reads of a DetectionDataset
        category_ids = [3, 17, 42, 99]

        def to_coco(self):
            return one_object_gt()

    evaluator = CocoEvaluator.from_dataset(Dataset())
    evaluator.update([1], [detection([(2, 100, 50, 300, 200, 0.9)])])
    assert evaluator.compute().ap == pytest.approx(1.0)


# ---------------------------------------------------------------- distributed


def distributed_worker(rank: int, world_size: int, init_file: str, out_file: str, gt: dict, shards,
                       category_ids=None) -> None:
    """One process: its shard of the detections, gathered to all, scored on rank 0 only."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        evaluator = CocoEvaluator(gt, CATEGORY_IDS if category_ids is None else category_ids)
        evaluator.update(*shards[rank])
        evaluator.synchronize()
        if is_main():
            with open(out_file, "w") as f:
                json.dump(evaluator.compute().to_dict(), f)
    finally:
        dist.destroy_process_group()


def test_distributed_gather_matches_one_process(tmp_path):
    gt = make_ground_truth(num_images=9)
    image_ids, detections = noisy_detections(gt)
    # rank 1 also repeats rank 0's first image, as DistributedSampler's padding does
    shards = [(image_ids[0::2], detections[0::2]),
              (image_ids[1::2] + image_ids[:1], detections[1::2] + detections[:1])]
    out_file = tmp_path / "result.json"
    # spawn, not fork: forking a process that already runs ONNX Runtime / OpenVINO threads can crash.
    mp.start_processes(distributed_worker, args=(2, str(tmp_path / "init"), str(out_file), gt, shards),
                       nprocs=2, start_method="spawn")

    assert json.loads(out_file.read_text()) == evaluate(gt, image_ids, detections).to_dict()
