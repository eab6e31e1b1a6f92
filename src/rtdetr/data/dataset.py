"""The data set every reader returns: images with boxes, labels contiguous 0..K-1.

A reader (coco.py, yolo.py, voc.py) turns its files into `ImageRecord`s (one per image, boxes
in absolute XYXY pixels with the data set's own category ids) through `make_record`, which
clips, drops and counts bad boxes; `DetectionDataset` then maps category ids to labels in
sorted id order and serves `(image, target)` pairs:

    image:  tv_tensors.Image, uint8 [3, H, W], RGB
    target: boxes      tv_tensors.BoundingBoxes float32 [n, 4], XYXY, absolute pixels, canvas (H, W)
            labels     int64 [n], 0..K-1
            image_id   int
            orig_size  int64 [2] = (w, h)
            masks      tv_tensors.Mask uint8 [n, H, W] (0/1), one per box, only for a data set
                       read with masks=True (see rtdetr.data.masks)

With masks, a record keeps each object's segmentation as read (polygons or RLE, never pixels);
the masks are rasterised when a target is made (`get_target`). An object without a usable
segmentation gets its filled box as its mask, counted once at load ("no_mask", "bad_mask").

Crowd boxes (COCO `iscrowd`) and VOC `difficult` boxes are left out of the training target, as
the official RT-DETR/DETR data pipeline does, but kept with `iscrowd: 1` in `to_coco()` so that
COCO evaluation neither rewards nor penalises detections on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from rtdetr.data.images import read_annotated_image
from rtdetr.data.masks import MASKS, coco_segmentation, object_masks, read_segmentation
from rtdetr.data.problems import DatasetError, Problems

# Per-box fields of a target, kept aligned with the boxes when boxes are dropped or merged.
# The masks (key MASKS) are per box too, but images in their own right: the ops that move
# pixels treat them apart (torchvision transforms them as tv_tensors.Mask).
PER_BOX_KEYS = ("labels", "iscrowd", "area")

# A box may stick out of its image by this many pixels (rounding in annotation tools) before
# the clipping counts as a problem; it is clipped either way.
CLIP_TOLERANCE = 1.0


@dataclass
class ImageRecord:
    """One image and its annotations, as loaded (before any transform).

    boxes: float64 [n, 4], XYXY, absolute pixels, inside the image, positive width and height.
    category_ids: int64 [n], the data set's own (original) category ids.
    iscrowd: bool [n], crowd (COCO) or difficult (VOC) boxes: ignored for training.
    areas: float64 [n], the area COCO evaluation uses (COCO's own `area` when the file had one).
    segmentations: None (read without masks), or n entries, each the object's segmentation in
        one of the raw forms of rtdetr.data.masks (polygons: float64 [2k] arrays in pixels; RLE:
        {"size": [h, w], "counts": str}), or None (no usable one: the filled box is its mask).
    """

    path: Path
    file_name: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray
    segmentations: list | None = None


def make_record(path: Path, file_name: str, image_id: int, width: int, height: int,
                boxes: Iterable, category_ids: Iterable, *, known_ids: set[int],
                problems: Problems, file: str, iscrowd: Iterable | None = None,
                areas: Iterable | None = None, segmentations: Iterable | None = None) -> ImageRecord:
    """Build an ImageRecord from raw XYXY pixel boxes, fixing what can be fixed.

    Each bad box is counted once in `problems` under `file`, checked in this order: not finite
    (malformed), category not in known_ids (unknown_category), zero or negative size (empty),
    entirely outside the image (outside), partly outside by more than CLIP_TOLERANCE (clipped;
    every box is clipped to the image anyway).

    segmentations: None (no masks), or one raw `segmentation` per box as found in the file
    (COCO polygons or RLE in pixels, None when there is none); those of the kept boxes are
    checked (`rtdetr.data.masks.read_segmentation`), each missing or malformed one counted once
    (no_mask, bad_mask).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ids = np.asarray(category_ids, dtype=np.int64).reshape(-1)
    crowd = np.zeros(len(ids), bool) if iscrowd is None else np.asarray(iscrowd, bool).reshape(-1)
    area = np.full(len(ids), np.nan) if areas is None else np.asarray(areas, np.float64).reshape(-1)

    keep = np.isfinite(boxes).all(axis=1)
    problems.add("malformed", file, int((~keep).sum()))
    known = np.array([cid in known_ids for cid in ids.tolist()], dtype=bool)
    problems.add("unknown_category", file, int((keep & ~known).sum()))
    keep &= known
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    problems.add("empty", file, int((keep & empty).sum()))
    keep &= ~empty

    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    outside = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    problems.add("outside", file, int((keep & outside).sum()))
    keep &= ~outside
    sticks_out = (np.abs(clipped - boxes) > CLIP_TOLERANCE).any(axis=1)
    problems.add("clipped", file, int((keep & sticks_out).sum()))

    clipped, ids, crowd, area = clipped[keep], ids[keep], crowd[keep], area[keep]
    box_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area = np.where(np.isfinite(area) & (area > 0), area, box_area)
    kept = None
    if segmentations is not None:
        raw = list(segmentations)
        if len(raw) != len(keep):
            raise ValueError(f"{len(raw)} segmentations for {len(keep)} boxes")
        kept = []
        for segmentation in (s for s, k in zip(raw, keep) if k):
            segmentation, problem = read_segmentation(segmentation, int(height), int(width))
            if problem is not None:
                problems.add(problem, file)
            kept.append(segmentation)
    return ImageRecord(Path(path), str(file_name), int(image_id), int(width), int(height),
                       clipped, ids, crowd, area, kept)


class DetectionDataset(Dataset):
    """Images and their boxes; `dataset[i]` is `(image, target)` as described in this module.

    records: one ImageRecord per image (images without boxes are kept: negatives).
    categories: (category id, name) pairs, any order; labels follow sorted id order.
    transforms: optional callable `(image, target) -> (image, target)`, applied last.
    split, source: the split's name and where it came from (shown in messages).
    masks: targets carry `masks` (from the records' segmentations; filled boxes where none).
    """

    def __init__(self, records: list[ImageRecord], categories: Iterable[tuple[int, str]],
                 transforms: Callable | None = None, split: str = "train", source: str = "",
                 masks: bool = False):
        categories = sorted((int(cid), str(name)) for cid, name in categories)
        ids = [cid for cid, _ in categories]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"{source or 'data set'}: duplicate category ids {sorted(ids)}")
        self.records = list(records)
        self.category_ids: list[int] = ids
        self.class_names: list[str] = [name for _, name in categories]
        self.transforms = transforms
        self.split = split
        self.source = str(source)
        self.masks = bool(masks)
        self._sorted_ids = np.asarray(ids, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        boxes = sum(len(r.boxes) for r in self.records)
        return (f"DetectionDataset({self.source!r}, split={self.split!r}: {len(self)} images, "
                f"{boxes} boxes, {self.num_classes} classes{', masks' if self.masks else ''})")

    def labels_of(self, category_ids: np.ndarray) -> np.ndarray:
        """Original category ids -> contiguous labels 0..K-1 (int64)."""
        return np.searchsorted(self._sorted_ids, np.asarray(category_ids, dtype=np.int64))

    def load_image(self, index: int) -> tv_tensors.Image:
        """The image of record `index`: uint8 [3, H, W], RGB, as annotated."""
        r = self.records[index]
        return read_annotated_image(r.path, expected_size=(r.width, r.height))

    def get_target(self, index: int) -> dict:
        """The training target of record `index` (crowd/difficult boxes left out), untransformed;
        with masks, they are rasterised here."""
        r = self.records[index]
        train = ~r.iscrowd
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(r.boxes[train], dtype=torch.float32).reshape(-1, 4),
                                              format="XYXY", canvas_size=(r.height, r.width)),
            "labels": torch.as_tensor(self.labels_of(r.category_ids[train]), dtype=torch.int64),
            "image_id": r.image_id,
            "orig_size": torch.tensor([r.width, r.height], dtype=torch.int64),
        }
        if self.masks:
            segmentations = None if r.segmentations is None else [
                s for s, t in zip(r.segmentations, train.tolist()) if t]
            masks = object_masks(segmentations, r.boxes[train], r.height, r.width)
            target[MASKS] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def load_item(self, index: int) -> tuple[tv_tensors.Image, dict]:
        """Record `index` as `(image, target)` before any transform (what `Mosaic` combines)."""
        return self.load_image(index), self.get_target(index)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image, target = self.load_item(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def to_coco(self) -> dict:
        """COCO-format ground truth (images, annotations, categories) with the ORIGINAL category ids.

        Boxes are `[x, y, w, h]` in pixels; crowd/difficult boxes have `iscrowd: 1`; annotation
        ids start at 1 (pycocotools treats id 0 as "unmatched"). An annotation whose record keeps
        a usable segmentation (read with masks) has it as `segmentation`: polygons in pixels, or
        RLE with str counts; `area` stays the detection one.
        """
        images, annotations = [], []
        for r in self.records:
            images.append({"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height})
            segmentations = r.segmentations if r.segmentations is not None else [None] * len(r.boxes)
            for box, cid, crowd, area, seg in zip(r.boxes, r.category_ids, r.iscrowd, r.areas, segmentations):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": r.image_id, "category_id": int(cid),
                    "bbox": [round(x1, 6), round(y1, 6), round(x2 - x1, 6), round(y2 - y1, 6)],
                    "area": round(float(area), 6), "iscrowd": int(crowd),
                })
                if seg is not None:
                    annotations[-1]["segmentation"] = coco_segmentation(seg)
        categories = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names)]
        return {"info": {"description": f"{self.source} ({self.split})"}, "licenses": [],
                "images": images, "annotations": annotations, "categories": categories}
