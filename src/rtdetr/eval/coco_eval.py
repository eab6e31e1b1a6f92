"""COCO box and mask evaluation (AP50:95, AP50, ..., AP per class), computed by faster-coco-eval.

    evaluator = CocoEvaluator.from_dataset(val_set)      # or CocoEvaluator(ground_truth, category_ids)
    for images, targets in loader:
        detections = postprocess(model(images), orig_sizes_wh)    # labels stay 0..K-1
        evaluator.update([t["image_id"] for t in targets], detections)
    evaluator.synchronize()                              # distributed: every process's detections
    if is_main():
        result = evaluator.compute()
        print(result.summary()); print(result.table())     # result.segm: the mask metrics, if any

Formats:

    ground truth  COCO-format dict with the data set's own category ids:
                  'images'      [{'id': int, ...}]
                  'annotations' [{'image_id', 'category_id', 'bbox': [x, y, w, h] pixels,
                                  'area' (default w * h), 'iscrowd' (default 0),
                                  'segmentation' (for masks: polygons, or RLE as for crowds)}]
                  'categories'  [{'id': int, 'name': str}]
    detections    per image {'labels' int64 [k] contiguous 0..K-1, 'boxes' [k, 4] xyxy pixels of
                  the original image, 'scores' [k]} (tensors or arrays), as `rtdetr.postprocess`
                  returns them WITHOUT its `category_ids=`; `category_ids[label]` gives the
                  category id. For mask evaluation also 'masks' bool [k, H, W] in the original
                  picture's pixels, or 'rles': k COCO RLE dicts (None for a detection without).

Masks (COCO's iouType "segm") are evaluated beside the boxes when `iou_types` asks for them, or,
by default, when the detections carry masks and the ground truth has segmentations; the result
is then the box `EvalResult` with the mask metrics in its `segm`. `update` keeps only the RLEs
of each image's 100 best-scoring masks (`segm_max_dets`; the convention of mask models' COCO
evaluation, as COCO's AP counts 100 detections per image and class), never pixel arrays.
Ground-truth objects without a segmentation count with their box as their mask.

The images evaluated are those given to `update` (every ground-truth image when none was), so a
subset of a data set can be evaluated; an image given twice keeps its last detections (the
duplicates a distributed sampler pads with are harmless). Crowd boxes neither reward nor
penalise detections on them; classes without ground truth get AP -1 and are left out of the
means, as COCO does. Nothing is printed: faster-coco-eval's messages are silenced.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from rtdetr.core.distributed import all_gather
from rtdetr.core.masks import rle_area
from rtdetr.eval.result import ClassAP, EvalResult
from rtdetr.eval.segm import SEGM_MAX_DETS, detection_rles, has_segmentation, image_sizes, segm_ground_truth

IOU_TYPES = ("bbox", "segm")


class ImageDetections(NamedTuple):
    """One image's detections, as kept between update() and compute()."""

    category_ids: np.ndarray                      # int64 [k]
    boxes: np.ndarray                             # float64 [k, 4] (x, y, w, h) pixels
    scores: np.ndarray                            # float64 [k]
    masks: tuple[np.ndarray, list[dict]] | None   # (rows [m] of the best masks, their RLEs), or none


class CocoEvaluator:
    """Collects detections image by image, then scores them against a COCO ground truth.

    ground_truth: COCO-format dict (see the module docstring); it is copied, not modified.
    category_ids: label -> category id (e.g. `rtdetr.core.coco_names.COCO_CATEGORY_IDS` for COCO-trained
    models); default: the ground truth's category ids, sorted (the labels of `DetectionDataset`).
    iou_types: ("bbox",) for boxes only, ("bbox", "segm") for masks too (every detection must
    then carry masks; a ValueError when the ground truth has no segmentation); default None:
    boxes, and masks whenever the detections carry them and the ground truth has segmentations.
    segm_max_dets: masks kept per image, the best by score (None: all).
    """

    def __init__(self, ground_truth: dict, category_ids: Sequence[int] | None = None,
                 iou_types: Sequence[str] | None = None, segm_max_dets: int | None = SEGM_MAX_DETS):
        has_masks = has_segmentation(ground_truth)
        if iou_types is not None:
            iou_types = tuple(iou_types)
            if "bbox" not in iou_types or not set(iou_types) <= set(IOU_TYPES):
                raise ValueError(f"iou_types must be ('bbox',) or ('bbox', 'segm'), got {iou_types}")
            if "segm" in iou_types and not has_masks:
                raise ValueError("segm evaluation asked for, but no ground-truth annotation has a segmentation")
        self.iou_types = iou_types
        self.segm_max_dets = segm_max_dets
        # Masks given to update() are encoded and kept (explicitly asked for, or by default).
        self.keeps_masks = "segm" in iou_types if iou_types is not None else has_masks
        clean = clean_ground_truth(ground_truth)
        self._segm_source: tuple[dict, dict] | None = None   # what the mask ground truth is made of
        if self.keeps_masks:
            outlines = {"images": [dict(im) for im in ground_truth["images"]],
                        "annotations": [{"id": a.get("id"), "image_id": a["image_id"],
                                         "segmentation": a.get("segmentation")} for a in ground_truth["annotations"]]}
            self._segm_source = (copy.deepcopy(clean), outlines)
        self._coco_gt_segm: COCO | None = None     # made from it when first needed
        self._sizes = image_sizes(ground_truth) if self.keeps_masks else {}
        self.coco_gt = COCO(clean, print_function=_quiet)
        if category_ids is None:
            category_ids = sorted(self.coco_gt.getCatIds())
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.class_names: dict[int, str] = class_names(self.coco_gt.dataset["categories"])
        self._label_to_category = np.asarray(self.category_ids, dtype=np.int64)
        self._known_images = set(self.coco_gt.getImgIds())
        self._detections: dict[int, ImageDetections] = {}

    @classmethod
    def from_dataset(cls, dataset: Any, iou_types: Sequence[str] | None = None,
                     segm_max_dets: int | None = SEGM_MAX_DETS) -> CocoEvaluator:
        """For a `rtdetr.data.DetectionDataset` (its `to_coco()` and `category_ids`)."""
        return cls(dataset.to_coco(), dataset.category_ids, iou_types, segm_max_dets)

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
            converted = self._convert(det, image_id)
            if self.iou_types is not None and "segm" in self.iou_types and converted.masks is None:
                raise ValueError(f"segm evaluation asked for, but the detections of image {image_id} "
                                 f"carry no 'masks' or 'rles'")
            self._detections[image_id] = converted

    def synchronize(self) -> None:
        """Gather the detections (and their masks' RLEs) of all processes into each (a no-op
        unless torch.distributed is initialised); call it on every process before `compute()`."""
        for part in all_gather(self._detections):
            self._detections.update(part)

    @property
    def evaluates_masks(self) -> bool:
        """Whether `compute()` will score masks: asked for, or (by default) given with the
        detections of some image."""
        if self.iou_types is not None:
            return "segm" in self.iou_types
        return any(d.masks is not None for d in self._detections.values())

    def compute(self) -> EvalResult:
        """Score the detections given so far (see the module docstring for which images): the box
        metrics, with the mask metrics in `.segm` when masks are evaluated (else None)."""
        image_ids = sorted(self._detections) or sorted(self._known_images)
        coco_eval = self._run_coco_eval(self.coco_gt, self._detections_coco(image_ids), "bbox", image_ids)
        per_class = self._per_class(coco_eval.eval["precision"], coco_eval.params.catIds, image_ids)
        segm = None
        if self.evaluates_masks:
            without = [i for i in image_ids if i in self._detections and self._detections[i].masks is None]
            if without:
                raise ValueError(f"{len(without)} image(s) have detections without masks (e.g. image "
                                 f"{without[0]}) while others have masks")
            segm_eval = self._run_coco_eval(self._segm_gt(), self._mask_detections_coco(image_ids), "segm",
                                            image_ids)
            segm = EvalResult.from_stats(segm_eval.stats, self._per_class(
                segm_eval.eval["precision"], segm_eval.params.catIds, image_ids), num_images=len(image_ids))
        return EvalResult.from_stats(coco_eval.stats, per_class, num_images=len(image_ids), segm=segm)

    # ------------------------------------------------------------ steps

    def _convert(self, det: dict, image_id: int) -> ImageDetections:
        """One image's {'labels', 'boxes' xyxy, 'scores'[, 'masks' | 'rles']} -> category ids,
        xywh boxes, scores, and the RLEs of the best masks (when masks are kept)."""
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
        masks = None
        if self.keeps_masks:
            masks = detection_rles(det, scores, self._sizes.get(image_id), self.segm_max_dets)
        return ImageDetections(self._label_to_category[labels], xywh, scores, masks)

    def _stacked(self, image_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The detections of `image_ids` in one piece: image ids [n], category ids [n], boxes
        [n, 4] (x, y, w, h), scores [n]."""
        given = [i for i in image_ids if i in self._detections]
        if not given:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
        category_ids, boxes, scores = (np.concatenate(parts) for parts in
                                       zip(*(self._detections[i][:3] for i in given)))
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

    def _segm_gt(self) -> COCO:
        """The ground truth with its segmentations as RLE (made on first use, then kept)."""
        if self._coco_gt_segm is None:
            self._coco_gt_segm = COCO(segm_ground_truth(*self._segm_source), print_function=_quiet)
        return self._coco_gt_segm

    def _mask_detections_coco(self, image_ids: list[int]) -> COCO:
        """The kept masks of `image_ids` as a COCO object, built as `COCO.loadRes` builds mask
        results: ids from 1, area the mask's pixels, not crowd (the box rides along unused)."""
        annotations = []
        for image_id in image_ids:
            det = self._detections.get(image_id)
            if det is None or det.masks is None:
                continue
            rows, rles = det.masks
            areas = rle_area(rles) if rles else []
            for row, rle, area in zip(rows.tolist(), rles, areas):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(det.category_ids[row]), "segmentation": rle,
                                    "bbox": det.boxes[row].tolist(), "score": float(det.scores[row]),
                                    "area": float(area), "iscrowd": 0})
        coco_gt = self._segm_gt()
        coco_dt = COCO(print_function=_quiet)
        coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": annotations,
                           "categories": coco_gt.dataset["categories"]}
        coco_dt.createIndex()
        return coco_dt

    @staticmethod
    def _run_coco_eval(coco_gt: COCO, coco_dt: COCO, iou_type: str, image_ids: list[int]) -> COCOeval_faster:
        """faster-coco-eval's evaluate / accumulate / summarize over `image_ids`, silently."""
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=_quiet)
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
