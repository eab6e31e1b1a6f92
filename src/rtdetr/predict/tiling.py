"""Tiled inference for large pictures (SAHI's idea): small objects that the network-size pass
blurs away are found in overlapping tiles seen near 1:1, large ones in one full-picture pass.

    det.predict("aerial.jpg", tile=640, overlap=0.2)      # rtdetr predict --tile 640 --overlap 0.2

One picture of W x H becomes:
  1. `tile_windows`: tiles of `tile` x `tile` pixels, neighbours sharing `overlap` of a tile
     (the last column and row shifted inward so that every tile lies inside the picture, as
     SAHI does; an axis no longer than `tile` is one tile of the picture's own length);
  2. every tile, plus the whole picture (SAHI's "standard prediction", for objects larger than
     the overlap), run through the predictor's own path (`Predictor.predict_batch`: the same
     pre-processing to the network size, model, post-processing, `conf` and masks), `batch` of
     them per forward pass; tile boxes are moved back to picture pixels by their tile's corner;
  3. `cut_by_inner_edge`: a tile's detection that reaches within `EDGE_MARGIN` of an edge the
     tile shares with the picture's inside (not the picture's border) is dropped. It is most
     likely an object cut by the tile, and a neighbour holds it whole: any object up to
     `whole_size` = overlap - 2 * margin - 2 pixels (113 px for 640 / 0.2) on each side lies whole,
     clear of inner edges, in some tile (a tile starts every tile - overlap pixels or less, so one
     starts less than tile - overlap before the object and so ends at least overlap after its
     start). A larger object cut in every tile is the full-picture pass's (at 640 for a 4000 px
     picture the overlap, 128 px, is still 20 network pixels). Without this rule a cut half and
     the whole object overlap by IoU ~0.5 or less and both survive the merge as duplicates;
     the full pass keeps only detections larger than `whole_size` on a side, the ones the tiles
     cannot promise: a small object's full-pass box is seen at lower resolution than in its tile,
     and its coarse box (IoU with the tile's often under 0.5) would survive the merge as a duplicate;
  4. `merge`: per class non-maximum suppression (`torchvision.ops.batched_nms`, IoU 0.5), best
     score first. NMS rather than weighted box fusion: the duplicates here are the same model
     seeing one object in two crops, one of which is often coarser (the full pass sees it 6x
     smaller) or partial; NMS keeps the best-scoring box as the model gave it, where fusion would
     average a precise tile box with a coarse one. It is also a well-kept compiled op (CPU, CUDA)
     where fusion would be our own loop.

Why not supervision's `InferenceSlicer` or SAHI: supervision is an optional extra here (with
matplotlib, PyAV and requests) while tiling is part of `predict` and the CLI; the slicer has no
full-picture pass and no inner-edge rule, works on `sv.Detections` rather than our `Result`
(masks, category ids, run folder), and batches slices only since recent releases (the installed
0.31 has `batch_size`; 0.26, our extra's floor, calls back per slice). SAHI runs its models one
slice at a time. The geometry is a few lines, written out here and tested by hand.

Segmentation models: each tile's masks (made in the tile's pixels by the predictor) are pasted at
the tile's place in a picture-sized mask, for the detections kept only.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torchvision.ops import batched_nms

from rtdetr.predict.results import Boxes, Masks, Result
from rtdetr.predict.sources import Frame

MERGE_IOU = 0.5        # boxes of one class overlapping more than this are one object
EDGE_MARGIN = 0.01     # of the tile: how near an inner tile edge a box counts as cut by it (6 px at 640)
MIN_TILE = 32


def check_tiling(tile: int, overlap: float) -> None:
    """One-line errors for unusable tiling settings."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < MIN_TILE:
        raise ValueError(f"tile must be a whole number of pixels, at least {MIN_TILE}, got {tile!r}")
    if not 0 <= overlap < 0.9:
        raise ValueError(f"overlap is a fraction of the tile in [0, 0.9), got {overlap}")


def whole_size(tile: int, overlap: float) -> float:
    """Objects up to this many pixels on each side lie whole, clear of inner edges (by more than
    the margin), in some tile: the least overlap of neighbours, less the margin on both sides."""
    return round(tile * overlap) - 2 * EDGE_MARGIN * tile - 2


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where tiles start along an axis of `length` pixels: 0, step, 2 step, ... and length - tile
    (the last one shifted inward to end at the picture's edge); [0] when length <= tile.
    step = tile - round(tile * overlap)."""
    if length <= tile:
        return [0]
    step = tile - round(tile * overlap)
    return list(range(0, length - tile, step)) + [length - tile]


def tile_windows(width: int, height: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """The tiles of a width x height picture as (x0, y0, x1, y1) pixels (x1, y1 exclusive), row by
    row: `tile` x `tile` each (an axis shorter than the tile: its whole length), inside the picture,
    neighbours overlapping by at least round(tile * overlap) pixels, together covering every pixel."""
    check_tiling(tile, overlap)
    if width < 1 or height < 1:
        raise ValueError(f"cannot tile a picture of {width}x{height}")
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def cut_by_inner_edge(xyxy: torch.Tensor, window: tuple[int, int, int, int], width: int, height: int,
                      margin: float) -> torch.Tensor:
    """bool [N]: which boxes [N, 4] (picture pixels) reach within `margin` pixels of an edge of
    `window` that lies inside the width x height picture (edges on the picture's border do not cut)."""
    x0, y0, x1, y1 = window
    cut = torch.zeros(len(xyxy), dtype=torch.bool)
    if x0 > 0:
        cut |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= xyxy[:, 1] <= y0 + margin
    if x1 < width:
        cut |= xyxy[:, 2] >= x1 - margin
    if y1 < height:
        cut |= xyxy[:, 3] >= y1 - margin
    return cut


def merge(xyxy: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float = MERGE_IOU) -> torch.Tensor:
    """Indices of the detections kept by per-class NMS at `iou`, best score first (int64 [K])."""
    if len(xyxy) == 0:
        return torch.zeros(0, dtype=torch.long)
    return batched_nms(xyxy.float(), scores.float(), labels, iou)


def predict_tiled(frame: Frame, run: Callable[[list[Frame]], list[Result]], tile: int, overlap: float,
                  batch: int, iou: float = MERGE_IOU, max_det: int | None = None) -> Result:
    """One picture's `Result` by tiles plus a full-picture pass (see the module docstring).

    run: the predictor's plain path, frames (any sizes) -> their Results in their own pixels
    batch: frames per call of `run` (tiles and the full picture alike)
    max_det: the most detections the merged result keeps, best first (each pass keeps the
             predictor's own `max_det` too)
    A picture that is one tile (no side longer than `tile`) is just the full-picture pass.
    """
    h, w = frame.image.shape[:2]
    windows = tile_windows(w, h, tile, overlap)
    if len(windows) == 1:
        return run([frame])[0]
    jobs = [dataclasses.replace(frame, image=np.ascontiguousarray(frame.image[y0:y1, x0:x1]))
            for x0, y0, x1, y1 in windows] + [frame]
    results: list[Result] = []
    for i in range(0, len(jobs), batch):
        results += run(jobs[i:i + batch])
    full = results[-1]

    boxes, scores, labels, where = [], [], [], []   # where: (result index, detection index) of each
    margin = EDGE_MARGIN * tile
    for j, (r, window) in enumerate(zip(results, windows + [None])):
        xyxy = r.boxes.xyxy
        if window is not None:
            xyxy = xyxy + xyxy.new_tensor(window[:2] * 2)
            keep = ~cut_by_inner_edge(xyxy, window, w, h, margin)
        else:                                           # the full pass: what tiles cannot promise
            keep = (xyxy[:, 2:] - xyxy[:, :2]).amax(1) > whole_size(tile, overlap)
        idx = torch.nonzero(keep).flatten()
        boxes.append(xyxy[idx]), scores.append(r.scores[idx]), labels.append(r.labels[idx])
        where += [(j, int(k)) for k in idx]
    xyxy, score, label = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    kept = merge(xyxy, score, label, iou)[:max_det]

    masks = None
    if full.masks is not None:
        data = torch.zeros((len(kept), h, w), dtype=torch.bool)
        for n, k in enumerate(kept.tolist()):
            j, d = where[k]
            x0, y0, x1, y1 = windows[j] if j < len(windows) else (0, 0, w, h)
            data[n, y0:y1, x0:x1] = results[j].masks.data[d]
        masks = Masks(data, (h, w))
    speed: dict[str, float] = {}
    for r in results:                                   # each pass's ms per picture, summed
        for key, ms in r.speed.items():
            speed[key] = speed.get(key, 0.0) + ms
    return dataclasses.replace(full, boxes=Boxes(xyxy[kept], (h, w)), scores=score[kept], labels=label[kept],
                               masks=masks, speed=speed)
