"""COCO box evaluation (AP50:95, AP50, ..., AP per class), computed by faster-coco-eval.

    evaluator = CocoEvaluator.from_dataset(val_set)      # or CocoEvaluator(ground_truth, category_ids)
    for images, targets in loader:
        detections = postprocess(model(images), orig_sizes_wh)    # labels stay 0..K-1
        evaluator.update([t["image_id"] for t in targets], detections)
    evaluator.synchronize()                              # distributed: every process's detections
    if is_main():
        result = evaluator.compute()
        print(result.summary()); print(result.table())

Formats:

    ground truth  COCO-format dict with the data set's own category ids:
                  'images'      [{'id': int, ...}]
                  'annotations' [{'image_id', 'category_id', 'bbox': [x, y, w, h] pixels,
                                  'area' (default w * h), 'iscrowd' (default 0)}]
                  'categories'  [{'id': int, 'name': str}]
    detections    per image {'labels' int64 [k] contiguous 0..K-1, 'boxes' [k, 4] xyxy pixels of
                  the original image, 'scores' [k]} (tensors or arrays), as `rtdetr.postprocess`
                  returns them WITHOUT its `category_ids=`; `category_ids[label]` gives the
                  category id.

The images evaluated are those given to `update` (every ground-truth image when none was), so a
subset of a data set can be evaluated; an image given twice keeps its last detections (the
duplicates a distributed sampler pads with are harmless). Crowd boxes neither reward nor
penalise detections on them; classes without ground truth get AP -1 and are left out of the
means, as COCO does. Nothing is printed: faster-coco-eval's messages are silenced.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from rtdetr.core.distributed import all_gather
from rtdetr.eval.result import ClassAP, EvalResult

# One image's detections, as kept between update() and compute():
# category ids int64 [k], boxes float64 [k, 4] (x, y, w, h) pixels, scores float64 [k].
ImageDetections = tuple[np.ndarray, np.ndarray, np.ndarray]


class CocoEvaluator:
    """Collects detections image by image, then scores them against a COCO ground truth.

    ground_truth: COCO-format dict (see the module docstring); it is copied, not modified.
    category_ids: label -> category id (e.g. `rtdetr.core.coco_names.COCO_CATEGORY_IDS` for COCO-trained
    models); default: the ground truth's category ids, sorted (the labels of `DetectionDataset`).
    """

    def __init__(self, ground_truth: dict, category_ids: Sequence[int] | None = None):
        self.coco_gt = COCO(clean_ground_truth(ground_truth), print_function=_quiet)
        if category_ids is None:
            category_ids = sorted(self.coco_gt.getCatIds())
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.class_names: dict[int, str] = class_names(self.coco_gt.dataset["categories"])
        self._label_to_category = np.asarray(self.category_ids, dtype=np.int64)
        self._known_images = set(self.coco_gt.getImgIds())
        self._detections: dict[int, ImageDetections] = {}

    @classmethod
    def from_dataset(cls, dataset: Any) -> CocoEvaluator:
        """For a `rtdetr.data.DetectionDataset` (its `to_coco()` and `category_ids`)."""
        return cls(dataset.to_coco(), dataset.category_ids)

    def reset(self) -> None:
        """Forget the detections given so far (e.g. before the next epoch's evaluation)."""
        self._detections.clear()

    def update(self, image_ids: Sequence[int], detections: Sequence[dict]) -> None:
        """Add the detections of a batch: image_ids[i] (ints or 0-d tensors) <-> detections[i]."""
        if len(image_ids) != len(detections):
            raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection dicts")
        for image_id, det in zip(image_ids, detections):
            image_id = int(image_id)
            if image_id not in self._known_images:
                raise ValueError(f"image id {image_id} is not in the ground truth")
            self._detections[image_id] = self._convert(det)

    def synchronize(self) -> None:
        """Gather the detections of all processes into each (a no-op unless torch.distributed
        is initialised); call it on every process before `compute()` on rank 0."""
        for part in all_gather(self._detections):
            self._detections.update(part)

    def compute(self) -> EvalResult:
        """Score the detections given so far (see the module docstring for which images)."""
        image_ids = sorted(self._detections) or sorted(self._known_images)
        coco_eval = self._run_coco_eval(image_ids)
        per_class = self._per_class(coco_eval.eval["precision"], coco_eval.params.catIds, image_ids)
        return EvalResult.from_stats(coco_eval.stats, per_class, num_images=len(image_ids))

    # ------------------------------------------------------------ steps

    def _convert(self, det: dict) -> ImageDetections:
        """One image's {'labels', 'boxes' xyxy, 'scores'} -> (category ids, xywh boxes, scores)."""
        labels = _as_numpy(det["labels"], torch.int64).reshape(-1)
        boxes = _as_numpy(det["boxes"], torch.float64).reshape(-1, 4)
        scores = _as_numpy(det["scores"], torch.float64).reshape(-1)
        if not len(labels) == len(boxes) == len(scores):
            raise ValueError(f"detections disagree in length: {len(labels)} labels, "
                             f"{len(boxes)} boxes, {len(scores)} scores")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.category_ids)):
            raise ValueError(f"labels must lie in 0..{len(self.category_ids) - 1} (contiguous labels, "
                             f"not category ids); got {labels.min()}..{labels.max()}")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        return self._label_to_category[labels], xywh, scores

    def _stacked(self, image_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The detections of `image_ids` in one piece: image ids [n], category ids [n], boxes
        [n, 4] (x, y, w, h), scores [n]."""
        given = [i for i in image_ids if i in self._detections]
        if not given:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
        category_ids, boxes, scores = (np.concatenate(parts) for parts in
                                       zip(*(self._detections[i] for i in given)))
        images = np.repeat(given, [len(self._detections[i][2]) for i in given])
        return images, category_ids, boxes, scores

    def _detections_coco(self, image_ids: list[int]) -> COCO:
        """The detections of `image_ids` as a COCO object, built as `COCO.loadRes` builds box
        results (ids from 1, area w * h, not crowd) less the polygon it adds to each (slow, unused).
        """
        rows = zip(*(a.tolist() for a in self._stacked(image_ids)))
        annotations = [{"id": n, "image_id": image_id, "category_id": cid, "bbox": box, "score": score,
                        "area": box[2] * box[3], "iscrowd": 0}
                       for n, (image_id, cid, box, score) in enumerate(rows, start=1)]
        coco_dt = COCO(print_function=_quiet)
        coco_dt.dataset = {"images": self.coco_gt.dataset["images"], "annotations": annotations,
                           "categories": self.coco_gt.dataset["categories"]}
        coco_dt.createIndex()
        return coco_dt

    def _run_coco_eval(self, image_ids: list[int]) -> COCOeval_faster:
        """faster-coco-eval's evaluate / accumulate / summarize over `image_ids`, silently."""
        coco_dt = self._detections_coco(image_ids)
        coco_eval = COCOeval_faster(self.coco_gt, coco_dt, iouType="bbox", print_function=_quiet)
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        return coco_eval

    def _per_class(self, precision: np.ndarray, category_ids: list[int],
                   image_ids: list[int]) -> dict[str, ClassAP]:
        """AP50:95 and AP50 per class, in category id order.

        precision: COCO's [T IoU thresholds, R recall points, K categories (category_ids order),
        A area ranges ('all' first), M maxDets (100 last)], -1 where a class has no ground truth.
        """
        num_gt = self._count_ground_truth(image_ids)
        per_class = {}
        for k, cid in enumerate(category_ids):
            p = precision[:, :, k, 0, -1]
            per_class[self.class_names[cid]] = ClassAP(int(cid), num_gt[cid], _mean_defined(p),
                                                       _mean_defined(p[0]))
        return per_class

    def _count_ground_truth(self, image_ids: list[int]) -> Counter:
        """category id -> non-crowd ground-truth boxes in `image_ids`."""
        images = set(image_ids)
        return Counter(a["category_id"] for a in self.coco_gt.dataset["annotations"]
                       if a["image_id"] in images and not a["iscrowd"])


# ---------------------------------------------------------------- helpers


def clean_ground_truth(ground_truth: dict) -> dict:
    """A copy of a COCO ground-truth dict with what box evaluation reads, made regular.

    Annotation ids are renumbered from 1 (COCO takes id 0 for "unmatched"), `area` defaults to
    w * h and `iscrowd` to 0; categories get a `name` (their id as text when missing).
    """
    images = [{k: im[k] for k in ("id", "width", "height") if k in im} for im in ground_truth["images"]]
    annotations = []
    for i, a in enumerate(ground_truth.get("annotations", [])):
        x, y, w, h = (float(v) for v in a["bbox"])
        annotations.append({
            "id": i + 1, "image_id": int(a["image_id"]), "category_id": int(a["category_id"]),
            "bbox": [x, y, w, h], "area": float(a.get("area", w * h)), "iscrowd": int(a.get("iscrowd", 0)),
        })
    categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))}
                  for c in ground_truth["categories"]]
    return {"images": images, "annotations": annotations, "categories": categories}


def class_names(categories: list[dict]) -> dict[int, str]:
    """category id -> its name, made unique by appending the id to names used more than once."""
    counts = Counter(c["name"] for c in categories)
    return {c["id"]: c["name"] if counts[c["name"]] == 1 else f"{c['name']} ({c['id']})" for c in categories}


def _as_numpy(x: Any, dtype: torch.dtype) -> np.ndarray:
    """A tensor, array or list as a CPU numpy array of `dtype`."""
    return torch.as_tensor(x).detach().to("cpu", dtype).numpy()


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the entries COCO defines (> -1); -1 when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def _quiet(*args: Any, **kwargs: Any) -> None:
    """A print function printing nothing (faster-coco-eval prints through one)."""
