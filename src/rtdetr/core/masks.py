"""Instance masks in the formats people store them in: COCO polygons, COCO run-length encoding
(compressed and uncompressed), and boolean pixel arrays.

    mask = segmentation_to_mask(ann["segmentation"], height, width)   # bool [H, W]
    rles = encode_rle(masks)                   # bool [N, H, W] -> COCO RLE dicts, JSON-ready
    masks = decode_rle(rles)                   # -> bool [N, H, W]
    polygons = mask_to_polygons(mask)          # [[x0, y0, x1, y1, ...], ...] (needs OpenCV)

Rasterising and run-length coding are COCO's own (faster-coco-eval's copy of the COCO API),
so a mask read here covers exactly the pixels COCO evaluation counts for it: a polygon covers
the pixels whose centres lie inside it, e.g. [1, 1, 4, 1, 4, 3, 1, 3] covers x 1..3, y 1..2.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# A COCO segmentation: polygons [[x, y, ...], ...], or RLE {"size": [h, w], "counts": str | list}.
Segmentation = Any


def _coco_mask():
    # Imported when first used: prediction of boxes alone never loads the COCO mask API.
    from faster_coco_eval.core import mask
    return mask


class MaskFormatError(ValueError):
    """A segmentation that is neither polygons nor RLE, or does not fit its image."""


def is_rle(segmentation: Segmentation) -> bool:
    return isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation


def segmentation_to_rle(segmentation: Segmentation, height: int, width: int) -> dict:
    """One object's COCO segmentation (polygons, or compressed or uncompressed RLE) -> compressed RLE."""
    coco_mask = _coco_mask()
    if is_rle(segmentation):
        size = [int(v) for v in segmentation["size"]]
        if size != [int(height), int(width)]:
            raise MaskFormatError(f"RLE of size {size} for an image of {height}x{width}")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed: run lengths, starting with a run of zeros
            return coco_mask.frPyObjects(segmentation, height, width)
        return {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
    if isinstance(segmentation, list) and segmentation:
        polygons = [list(map(float, p)) for p in segmentation]
        if any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise MaskFormatError("a polygon needs at least 3 points as x, y pairs")
        if not all(np.isfinite(p).all() for p in polygons):
            raise MaskFormatError("a polygon has a coordinate that is not finite")
        return coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    raise MaskFormatError(f"a segmentation must be polygons or RLE, got {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """One object's COCO segmentation -> bool [height, width]."""
    coco_mask = _coco_mask()
    return coco_mask.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def encode_rle(masks) -> list[dict]:
    """bool [N, H, W] (or one [H, W]), a numpy array or a tensor on any device -> N compressed
    COCO RLE dicts with `counts` as str (JSON-ready). The transposition to COCO's column-major
    order is done where the masks are (on the GPU for masks pasted there)."""
    coco_mask = _coco_mask()
    masks = masks.detach().bool() if hasattr(masks, "detach") else np.asarray(masks, dtype=bool)  # a tensor stays one
    if masks.ndim not in (2, 3):
        raise ValueError(f"masks must be [N, H, W] or [H, W], got shape {list(masks.shape)}")
    masks = masks[None] if masks.ndim == 2 else masks
    if isinstance(masks, np.ndarray):
        columns = np.ascontiguousarray(masks.transpose(0, 2, 1))
    else:
        columns = masks.transpose(1, 2).contiguous().cpu().numpy()
    n, w, h = columns.shape
    if n == 0:
        return []
    rles = coco_mask.encode(columns.view(np.uint8).transpose(2, 1, 0))   # [H, W, N], Fortran order
    return [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_rle(rles: Sequence[dict] | dict) -> np.ndarray:
    """COCO RLE dict(s), compressed or not, all of one size -> bool [N, H, W] (one dict: [H, W])."""
    coco_mask = _coco_mask()
    single = isinstance(rles, dict)
    items = [rles] if single else list(rles)
    if not items:
        raise ValueError("no RLE to decode (the size is unknown)")
    h, w = (int(v) for v in items[0]["size"])
    decoded = np.stack([coco_mask.decode(segmentation_to_rle(r, h, w)).astype(bool) for r in items])
    return decoded[0] if single else decoded


def rle_area(rles: Sequence[dict]) -> np.ndarray:
    """Pixel count of each compressed RLE -> float64 [N]."""
    coco_mask = _coco_mask()
    coded = [{"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}
             for r in rles]
    return np.asarray(coco_mask.area(coded), dtype=np.float64).reshape(-1)


def mask_to_polygons(mask: np.ndarray, min_area: float = 1.0) -> list[list[float]]:
    """bool [H, W] -> the outer contours as COCO polygons [[x0, y0, x1, y1, ...], ...] in pixel
    coordinates (pixel (i, j) covers [j, j + 1) x [i, i + 1); holes are not kept: a polygon list
    cannot carry them). Needs OpenCV.

    OpenCV traces the centres of the boundary pixels, so a polygon through them, rasterised again,
    loses half a pixel along every edge (a 30 x 40 rectangle comes back as 29 x 39, IoU 0.94).
    Tracing the mask at twice its resolution puts the vertices a quarter pixel inside the
    boundary instead: every boundary pixel's centre is inside again, and the polygon rasterises
    back to the mask. min_area: in pixels of the mask."""
    try:
        import cv2
    except ImportError:
        raise ImportError("polygons need OpenCV: pip install 'rtdetr[polygons]' (opencv-python-headless)") from None
    doubled = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8).repeat(2, 0).repeat(2, 1))
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) >= 3 and cv2.contourArea(contour) >= 4 * min_area:
            # Doubled pixel k's centre is at (k + 0.5) / 2 in the mask's coordinates.
            polygons.append(((contour.reshape(-1).astype(float) + 0.5) / 2).tolist())
    return polygons
