"""Instance masks in the data layer: each object's segmentation as read from its annotation file,
checked once when the data set loads, and rasterised only when a sample is served.

A record (`ImageRecord.segmentations`) keeps one entry per object, in one of two raw forms (never
pixel arrays), or None:

    polygons  list of float64 [2k] arrays (x0, y0, x1, y1, ...), k >= 3, pixels of the image
              (COCO's own polygons, or YOLO-seg's normalised ones times the image size)
    RLE       {"size": [h, w], "counts": str}, COCO's compressed run-length encoding (an
              uncompressed RLE, counts a list, is compressed when read: runs only, no pixels)
    None      the object has no usable segmentation: its filled box is its mask

Rasterising is COCO's (`rtdetr.core.masks`): a polygon covers the pixels whose centres lie inside
it. The filled box of an object without a segmentation follows the same rule (and covers at
least the pixel under its centre): an integer box [x1, y1, x2, y2] covers columns x1..x2-1 and
rows y1..y2-1, as its polygon would.

Checks at load time read the runs of an RLE, never its pixels: what they cannot see (none known
for this faster-coco-eval) and rasterising then refuses falls back to the filled box, uncounted.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from rtdetr.core.masks import MaskFormatError, is_rle, segmentation_to_mask

# The target key of the masks: tv_tensors.Mask uint8 [n, H, W] from a data set, a plain
# uint8 tensor [n, h, w] after the pipelines of rtdetr.data.transforms.
MASKS = "masks"

# What faster-coco-eval raises for a segmentation it cannot read.
COCO_ERRORS = (MaskFormatError, ValueError, RuntimeError, TypeError, OverflowError)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _polygons(raw: list) -> list[np.ndarray] | None:
    """COCO polygons [[x, y, ...], ...] (or one flat [x, y, ...]) -> float64 arrays; None if malformed."""
    parts = [raw] if _is_number(raw[0]) else raw
    out = []
    for part in parts:
        if not isinstance(part, (list, tuple)):
            return None
        try:
            coords = np.asarray(part, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if coords.ndim != 1 or len(coords) < 6 or len(coords) % 2 or not np.isfinite(coords).all():
            return None
        out.append(coords)
    return out


def _run_total(rle: dict) -> int | None:
    """The sum of a compressed RLE's runs (its pixel count), read from the runs without decoding
    pixels; None when this faster-coco-eval has no way to say (then only `area` checks it)."""
    to_runs = getattr(getattr(coco_mask, "_mask", None), "toUncompressedRLE", None)
    if to_runs is None:
        return None
    return int(sum(to_runs([rle])[0]["counts"]))


def _rle(raw: dict, height: int, width: int) -> dict | None:
    """COCO RLE (compressed or not) -> {"size": [h, w], "counts": str}; None if malformed or not
    of this image's size."""
    try:
        size = [int(v) for v in raw["size"]]
    except (TypeError, ValueError):
        return None
    if size != [height, width]:
        return None
    counts = raw["counts"]
    try:
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                return None
            counts = coco_mask.frPyObjects({"size": size, "counts": counts}, height, width)["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            return None
        rle = {"size": size, "counts": counts}
        coco_mask.area([rle])  # a malformed string, or runs past the image, raise here
        total = _run_total(rle)
        if total is not None and total != height * width:
            return None
        return {"size": size, "counts": counts.decode("ascii")}
    except COCO_ERRORS + (UnicodeError,):
        return None


def read_segmentation(raw: Any, height: int, width: int) -> tuple[Any, str | None]:
    """One object's `segmentation` as found in its file -> (its raw form for the record, or None;
    the problem kind: None, "no_mask" (none given: missing, None or empty) or "bad_mask")."""
    if raw is None or (isinstance(raw, (list, dict)) and not raw):
        return None, "no_mask"
    if is_rle(raw):
        rle = _rle(raw, height, width)
        return (rle, None) if rle is not None else (None, "bad_mask")
    if isinstance(raw, list):
        polygons = _polygons(raw)
        return (polygons, None) if polygons is not None else (None, "bad_mask")
    return None, "bad_mask"


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """The filled box XYXY (pixels) -> bool [height, width]: the pixels whose centres lie inside
    it (x1 <= i + 0.5 < x2), at least the one under its centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)

    def span(lo: float, hi: float, size: int) -> slice:
        a, b = max(0, math.ceil(lo - 0.5)), min(size, math.ceil(hi - 0.5))
        if b <= a:  # thinner than the spacing of pixel centres: the pixel under its middle
            a = min(max(0, math.floor((lo + hi) / 2)), size - 1)
            b = a + 1
        return slice(a, b)

    mask[span(y1, y2, height), span(x1, x2, width)] = True
    return mask


def object_mask(segmentation: Any, box: Sequence[float], height: int, width: int) -> np.ndarray:
    """One object's mask, bool [height, width]: its segmentation rasterised, its filled box when
    it has none (or, what the load-time checks let through, one faster-coco-eval cannot read)."""
    if segmentation is not None:
        try:
            mask = segmentation_to_mask(segmentation, height, width)
            if mask.shape == (height, width):
                return mask
        except COCO_ERRORS:
            pass
    return box_mask(box, height, width)


def object_masks(segmentations: Sequence[Any] | None, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """The masks of n objects, uint8 [n, height, width] (0/1), one per box [n, 4] XYXY pixels;
    `segmentations` None: every mask is its filled box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    segmentations = [None] * len(boxes) if segmentations is None else list(segmentations)
    if len(segmentations) != len(boxes):
        raise ValueError(f"{len(segmentations)} segmentations for {len(boxes)} boxes")
    out = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for i, (segmentation, box) in enumerate(zip(segmentations, boxes)):
        out[i] = object_mask(segmentation, box, height, width)
    return out


def coco_segmentation(segmentation: Any) -> list[list[float]] | dict:
    """A record's (not None) segmentation as JSON-ready COCO: polygons as lists of floats, RLE
    with str counts."""
    if isinstance(segmentation, dict):
        return {"size": list(segmentation["size"]), "counts": segmentation["counts"]}
    return [p.tolist() for p in segmentation]
