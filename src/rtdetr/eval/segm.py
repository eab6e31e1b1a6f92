"""The mask side of COCO evaluation: the ground truth's segmentations as RLE, and one image's
predicted masks as the RLEs of its best detections.

Masks are kept as COCO's compressed RLE (dicts {"size": [h, w], "counts": str}) from the moment
they are given, never as pixel arrays: 100 RLEs of a COCO picture take a few kB.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rtdetr.core.masks import MaskFormatError, encode_rle, is_rle, segmentation_to_rle

# COCO scores the 100 best detections (per image and class) for AP; masks are kept for the
# 100 best per image, the convention of mask models' COCO evaluation (Mask R-CNN, Mask2Former).
SEGM_MAX_DETS = 100


def has_segmentation(ground_truth: dict) -> bool:
    """Whether any annotation of a COCO-format dict has a (non-empty) `segmentation`."""
    return any(a.get("segmentation") for a in ground_truth.get("annotations", []))


def best_rows(scores: np.ndarray | torch.Tensor, limit: int | None) -> np.ndarray:
    """The rows of the `limit` best scores [k] (all when limit is None), best first; equal scores
    keep their order, as COCO's stable sort does -> int64 [min(k, limit)]."""
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy().reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return order if limit is None else order[:limit]


def image_sizes(ground_truth: dict) -> dict[int, tuple[int, int]]:
    """image id -> (height, width): the image's own, else the size of an RLE on it."""
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"]))
             for im in ground_truth["images"] if "height" in im and "width" in im}
    for a in ground_truth.get("annotations", []):
        seg = a.get("segmentation")
        if is_rle(seg):
            sizes.setdefault(int(a["image_id"]), tuple(int(v) for v in seg["size"]))
    return sizes


def segm_ground_truth(clean: dict, ground_truth: dict) -> dict:
    """The cleaned box ground truth (`clean_ground_truth`'s, same annotation order) with each
    annotation's segmentation as compressed RLE (str counts) and every image's height and width.

    An annotation without a segmentation takes its box as its mask (rounded to whole pixels
    as COCO rasterises polygons), so that an object without an outline still counts.
    """
    sizes = image_sizes(ground_truth)
    images = []
    for im in clean["images"]:
        if int(im["id"]) not in sizes:
            raise ValueError(f"image {im['id']} has no height and width: mask evaluation needs them")
        h, w = sizes[int(im["id"])]
        images.append({**im, "height": h, "width": w})
    annotations = []
    for clean_ann, ann in zip(clean["annotations"], ground_truth.get("annotations", []), strict=True):
        h, w = sizes[clean_ann["image_id"]]
        seg = ann.get("segmentation")
        if not seg:
            x, y, bw, bh = clean_ann["bbox"]
            seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        try:
            rle = segmentation_to_rle(seg, h, w)
        except MaskFormatError as e:
            raise ValueError(f"annotation {ann.get('id', '?')} of image {clean_ann['image_id']}: {e}") from None
        counts = rle["counts"]
        annotations.append({**clean_ann, "segmentation": {
            "size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}})
    return {**clean, "images": images, "annotations": annotations}


def detection_rles(det: dict, scores: np.ndarray, size_hw: tuple[int, int] | None,
                   limit: int | None) -> tuple[np.ndarray, list[dict]] | None:
    """One image's masks as (rows int64 [m], their RLEs [m]): the `limit` best-scoring
    detections that have one, best first; None when the detections carry no masks.

    det: 'masks' bool [k, H, W] in the image's pixels (tensor or array), or 'rles': k entries,
    each an RLE dict of the image's size or None (that detection has no mask); scores [k].
    size_hw: the image's (height, width) the masks must have (None: not checked).
    """
    if "masks" in det:
        masks = det["masks"]
        shape = tuple(masks.shape)
        if len(shape) != 3 or shape[0] != len(scores):
            raise ValueError(f"masks must be [{len(scores)}, H, W] for {len(scores)} detections, got {list(shape)}")
        dtype = str(masks.dtype)
        if not (dtype.endswith("bool") or dtype.endswith("uint8")):
            raise ValueError(f"masks must be bool [k, H, W] in the picture's pixels, got {dtype} "
                             f"(logits are pasted first: rtdetr.models.postprocess.paste_masks)")
        _check_size(shape[1:], size_hw)
        rows = best_rows(scores, limit)
        if isinstance(masks, torch.Tensor):
            return rows, encode_rle(masks[torch.as_tensor(rows, device=masks.device)])
        return rows, encode_rle(np.asarray(masks)[rows].astype(bool).reshape(len(rows), *shape[1:]))
    if "rles" in det:
        rles = list(det["rles"])
        if len(rles) != len(scores):
            raise ValueError(f"{len(rles)} rles for {len(scores)} detections (None for one without a mask)")
        with_mask = np.asarray([i for i, r in enumerate(rles) if r is not None], dtype=np.int64)
        rows = with_mask[best_rows(scores[with_mask], limit)] if len(with_mask) else with_mask
        return rows, [_compressed(rles[i], size_hw) for i in rows]
    return None


def _compressed(rle: dict, size_hw: tuple[int, int] | None) -> dict:
    """A predicted RLE (compressed or not) as compressed RLE with str counts."""
    if not is_rle(rle):
        raise ValueError(f"rles must be COCO RLE dicts {{'size', 'counts'}} or None, got {type(rle).__name__}")
    size = tuple(int(v) for v in rle["size"])
    _check_size(size, size_hw)
    coded = segmentation_to_rle(rle, *size)
    counts = coded["counts"]
    return {"size": list(size), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _check_size(mask_hw: Sequence[int], size_hw: tuple[int, int] | None) -> None:
    if size_hw is not None and tuple(int(v) for v in mask_hw) != tuple(size_hw):
        raise ValueError(f"masks of {mask_hw[0]}x{mask_hw[1]} for an image of {size_hw[0]}x{size_hw[1]} "
                         f"(h x w): masks must be in the original picture's pixels")
