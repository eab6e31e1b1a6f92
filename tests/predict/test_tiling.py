"""Tiled inference (`rtdetr.predict.tiling`): the window geometry worked out by hand, the inner-edge
rule and the merge by hand, boxes and masks mapped back exactly through the real `Predictor`, and
the done-when test: ~40 objects of 12-20 px in a 4000 x 3000 picture that one 640 pass misses.

The stand-in detector here, `ComponentDetector`, finds MANY objects: every connected group of
pure-colour network-input pixels is one query, its box that group's bounding box (exact when the
picture reaches the network at 1:1, as a 640 tile does at imgsz 640). A picture shrunk to the
network size is a bilinear blend (PIL's, with a support of the shrink factor on each side), so a
small object's pixels mix with the background and are no longer pure: the full pass misses it.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from rtdetr.api import Detector
from rtdetr.cli import app as cli
from rtdetr.cli import predict as predict_cli
from rtdetr.predict import Predictor, predict
from rtdetr.predict.tiling import cut_by_inner_edge, merge, tile_starts, tile_windows
from tests.predict.conftest import BLUE, GREEN, RED, WHITE

COLOURS = [RED, GREEN, BLUE, WHITE]               # label = index


class ComponentDetector(nn.Module):
    """One query per 8-connected group of pure-colour pixels (every channel exactly 0 or 1 as the
    colour says) whose bounding box is at least 2 x 2 network pixels (a detector needs a few
    pixels of an object: a lone pure pixel is no detection); score 0.9, class = the colour's index.
    masks=True adds a mask head's outputs: the group's pixels at 1/4 of the input (a cell is in
    when most of its 4 x 4 pixels are), logits +-10, one mask query per detection query."""

    def __init__(self, queries: int = 100, masks: bool = False):
        super().__init__()
        self.num_classes, self.class_names = 4, ["red", "green", "blue", "white"]
        self.queries, self.masks = queries, masks
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None) -> dict[str, torch.Tensor]:
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        q = self.queries
        logits = torch.full((b, q, self.num_classes), -20.0)
        boxes = torch.full((b, q, 4), 0.5)
        features = torch.full((b, q, h // 4, w // 4), -10.0)
        px = x.numpy()
        for i in range(b):
            n = 0
            for label, colour in enumerate(COLOURS):
                want = np.array([c / 255 for c in colour], np.float32).reshape(3, 1, 1)
                groups, _ = ndimage.label((px[i] == want).all(0), structure=np.ones((3, 3)))
                for k, sl in enumerate(ndimage.find_objects(groups), start=1):
                    (y1, y2), (x1, x2) = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
                    if x2 - x1 < 2 or y2 - y1 < 2 or n == q:
                        continue
                    boxes[i, n] = torch.tensor([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
                    logits[i, n, label] = math.log(0.9 / 0.1)
                    if self.masks:
                        cells = (groups == k).reshape(h // 4, 4, w // 4, 4).mean((1, 3)) > 0.5
                        features[i, n][torch.from_numpy(cells)] = 10.0
                    n += 1
        out = {"pred_logits": logits, "pred_boxes": boxes}
        if self.masks:
            out |= {"mask_queries": torch.eye(q).expand(b, q, q), "mask_features": features}
        return out


def scene(w: int, h: int, objects: list[tuple[int, tuple[int, int, int, int]]]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for label, (x1, y1, x2, y2) in objects:
        img[y1:y2, x1:x2] = COLOURS[label]
    return img


def boxes_of(result) -> list[tuple[int, tuple[int, ...]]]:
    return sorted((int(l), tuple(round(v, 3) for v in b)) for l, b in
                  zip(result.labels.tolist(), result.boxes.xyxy.tolist()))


# ---------------------------------------------------------------------------- geometry by hand
def test_windows_by_hand():
    # 1000 x 700, tile 400, overlap 0.25: step 300; x starts 0, 300 and 600 (= 1000 - 400, shifted
    # inward), y starts 0 and 300 (= 700 - 400)
    assert tile_starts(1000, 400, 0.25) == [0, 300, 600]
    assert tile_windows(1000, 700, 400, 0.25) == [
        (0, 0, 400, 400), (300, 0, 700, 400), (600, 0, 1000, 400),
        (0, 300, 400, 700), (300, 300, 700, 700), (600, 300, 1000, 700)]
    # 1100 wide: 0, 300, 600 would end at 1000; the last is shifted inward to 700
    assert tile_starts(1100, 400, 0.25) == [0, 300, 600, 700]
    assert tile_windows(300, 200, 640, 0.2) == [(0, 0, 300, 200)]        # smaller than one tile
    assert tile_windows(1000, 500, 640, 0.2) == [(0, 0, 640, 500), (360, 0, 1000, 500)]
    assert tile_starts(1280, 640, 0) == [0, 640]                          # no overlap: side by side


@pytest.mark.parametrize("w, h, tile, overlap", [(4000, 3000, 640, 0.2), (1001, 999, 256, 0.5),
                                                 (641, 640, 640, 0.2), (777, 333, 100, 0.0), (90, 5000, 64, 0.85)])
def test_windows_cover_the_picture_inside_it_with_the_overlap_asked(w, h, tile, overlap):
    windows = tile_windows(w, h, tile, overlap)
    covered = np.zeros((h, w), np.int32)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h                    # inside the picture
        assert x1 - x0 == min(tile, w) and y1 - y0 == min(tile, h)         # full tiles
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1                                              # every pixel
    for starts in (tile_starts(w, tile, overlap), tile_starts(h, tile, overlap)):
        gaps = np.diff(starts)
        assert (gaps > 0).all() and (gaps <= tile - round(tile * overlap)).all()   # overlap >= asked


@pytest.mark.parametrize("tile, overlap, message", [
    (16, 0.2, "tile must be a whole number of pixels, at least 32, got 16"),
    (640.5, 0.2, "tile must be a whole number of pixels, at least 32, got 640.5"),
    (640, 0.9, r"overlap is a fraction of the tile in \[0, 0.9\), got 0.9"),
    (640, -0.1, r"overlap is a fraction of the tile in \[0, 0.9\), got -0.1")])
def test_bad_settings_are_one_line(tile, overlap, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        tile_windows(1000, 1000, tile, overlap)
    with pytest.raises(ValueError, match=f"^{message}$"):
        Predictor(ComponentDetector(), tile=tile, overlap=overlap)


def test_inner_edges_cut_picture_borders_do_not():
    window = (300, 0, 700, 400)                     # in a 1000 x 700 picture: left, right, bottom inner
    boxes = torch.tensor([[302.0, 50, 340, 90],     # at the left inner edge (within 4 px)
                          [400.0, 0, 450, 40],      # at the top: the picture's border
                          [400.0, 100, 450, 398],   # at the bottom inner edge
                          [660.0, 100, 699, 140],   # at the right inner edge
                          [310.0, 10, 690, 390]])   # clear of all (margin 4)
    assert cut_by_inner_edge(boxes, window, 1000, 700, margin=4).tolist() == [True, False, True, True, False]
    assert cut_by_inner_edge(boxes, (0, 0, 1000, 700), 1000, 700, margin=4).tolist() == [False] * 5


def test_merge_keeps_one_per_object_and_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 1, 10, 11],   # IoU 9/11 = 0.82, same class: one
                          [0.0, 0, 10, 10],                     # the same box, another class: kept
                          [0.0, 6, 10, 16]])                    # IoU 4/16 = 0.25 with the first: kept
    keep = merge(boxes, torch.tensor([0.8, 0.9, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]))
    assert keep.tolist() == [1, 2, 3]                           # best score first


# ---------------------------------------------------------------------------- through the Predictor
# 2000 x 1500 at tile 320 = imgsz 320 (1:1), overlap 0.2: tiles start every 256 px (x: 0, 256, ...,
# 1536, 1680). The full pass shrinks 6.25 x 4.7: objects of 15-24 px keep a pure core of 2 x 2 network
# pixels at most there, so its boxes are those cores, far from exact (and its small ones are dropped).
W, H, TILE = 2000, 1500, 320
OBJECTS = [(0, (100, 100, 120, 116)),           # inside the first tile only
           (1, (300, 40, 324, 60)),             # across x = 320 (tile 0's right edge), whole in tile 1
           (2, (500, 250, 520, 270)),           # across y = 256 and x = 512: four tiles, some cut it
           (3, (1985, 1484, 2000, 1500)),       # in the picture's corner (picture borders cut nothing)
           (0, (1660, 700, 1684, 716))]         # in the overlap of the last two columns


def test_boxes_come_back_exactly_and_once():
    det = ComponentDetector()
    (r,) = predict(det, scene(W, H, OBJECTS), imgsz=TILE, tile=TILE, overlap=0.2, batch=8)
    n_tiles = len(tile_windows(W, H, TILE, 0.2))
    assert n_tiles == 8 * 6
    assert [c[0] for c in det.calls] == [8] * 6 + [1]   # 48 tiles and the full picture, 8 per pass
    assert boxes_of(r) == sorted((l, tuple(float(v) for v in b)) for l, b in OBJECTS)
    assert r.orig_shape == (H, W) and r.speed["inference"] > 0
    # The plain pass misses some and gets none exactly (why tiling)
    (plain,) = predict(ComponentDetector(), scene(W, H, OBJECTS), imgsz=TILE)
    assert len(plain) < len(OBJECTS) and not set(boxes_of(plain)) & set(boxes_of(r))


def test_max_det_holds_for_the_merged_result():
    """Each tile keeps up to max_det, so the merge could hold more: it keeps the best max_det."""
    (r,) = predict(ComponentDetector(), scene(W, H, OBJECTS), imgsz=TILE, tile=TILE, overlap=0.2, batch=8, max_det=3)
    truth = sorted((l, tuple(float(v) for v in b)) for l, b in OBJECTS)
    assert len(OBJECTS) > 3 and len(r) == 3 and set(boxes_of(r)) <= set(truth)


def test_a_cut_half_is_dropped_for_the_neighbours_whole_object():
    """x 300..356 crosses tile 0's right edge (320): tile 0 sees 20 of its 56 px, an IoU of 0.36
    with the whole box that tile 1 (from 256) sees, too little for NMS; the inner-edge rule drops it."""
    objects = [(1, (300, 40, 356, 60))]
    (r,) = predict(ComponentDetector(), scene(W, H, objects), imgsz=TILE, tile=TILE, overlap=0.2)
    assert boxes_of(r) == [(1, (300.0, 40.0, 356.0, 60.0))]


def test_large_objects_come_from_the_full_pass():
    """A 900 x 700 object is cut by every 320 tile it touches (all dropped); the full pass finds it."""
    objects = [(2, (400, 300, 1300, 1000)), (0, (100, 100, 120, 116))]
    (r,) = predict(ComponentDetector(), scene(W, H, objects), imgsz=TILE, tile=TILE, overlap=0.2)
    assert len(r) == 2
    (big,) = r.boxes.xyxy[r.labels == 2]
    # the full pass's box: the pure core of a 6.25 x 4.7 shrink, at most one network pixel off per side
    assert torch.allclose(big, torch.tensor([400.0, 300, 1300, 1000]), atol=W / TILE + 0.01)
    assert boxes_of(r)[0] == (0, (100.0, 100.0, 120.0, 116.0))


def test_masks_are_pasted_in_the_picture():
    """Objects on a 4 px grid (tiles start on it too), at 1:1: a tile's mask is the object's pixels
    but for its 4 corner pixels. Why: the 1/4 map is +10 inside, -10 outside; the bilinear upsampling
    (half-pixel centres) puts the edge pixel 0.625 of the way into an inside cell on each axis, so
    a corner pixel gets 0.625^2 = 0.39 of the inside (logit < 0: out) and an edge pixel
    0.625 x 0.875 = 0.55 (in)."""
    objects = [(0, (100, 100, 120, 116)), (1, (300, 40, 324, 60)), (2, (1660, 700, 1684, 716))]
    (r,) = predict(ComponentDetector(masks=True), scene(W, H, objects), imgsz=TILE, tile=TILE, overlap=0.2)
    assert r.masks is not None and r.masks.data.shape == (3, H, W)
    for label, (x1, y1, x2, y2) in objects:
        (i,) = torch.nonzero(r.labels == label).flatten().tolist()
        truth = torch.zeros(H, W, dtype=torch.bool)
        truth[y1:y2, x1:x2] = True
        truth[[y1, y1, y2 - 1, y2 - 1], [x1, x2 - 1, x1, x2 - 1]] = False
        assert torch.equal(r.masks.data[i], truth)


def test_detector_predict_and_cli_take_tiles(tmp_path, monkeypatch, capsys):
    img = scene(W, H, OBJECTS[:2])
    (r,) = Detector(ComponentDetector()).predict(img, imgsz=TILE, tile=TILE, overlap=0.2)
    assert boxes_of(r) == sorted((l, tuple(float(v) for v in b)) for l, b in OBJECTS[:2])

    from PIL import Image
    Image.fromarray(img).save(tmp_path / "big.png")
    monkeypatch.setattr(predict_cli, "load_cli_model", lambda *a, **k: ComponentDetector())
    assert cli.main(["predict", "-w", "w.pth", str(tmp_path / "big.png"), "--imgsz", "320", "--tile", "320",
                     "--overlap", "0.2", "--out", str(tmp_path / "o"), "-q"]) == 0
    assert "2 detection(s): 1 red, 1 green" in capsys.readouterr().out
    assert cli.main(["predict", "-w", "w.pth", str(tmp_path / "big.png"), "--tile", "16"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "rtdetr: error: tile must be a whole number of pixels, at least 32, got 16"


# ---------------------------------------------------------------------------- done when
def test_small_objects_in_a_large_picture():
    """4000 x 3000, 40 objects of 12-20 px and 2 large ones; imgsz 640, tile 640, overlap 0.2.

    The plain pass shrinks 6.25x: PIL's bilinear filter then spans 12.5 source px, so an object of
    s px keeps a pure core of s - 12.5 px, under 7.5 px: at most 2 network pixels on a side, and
    both only when the pixel grid happens to fall right (about 20% per axis for 20 px, never below
    18.75 px). So recall without tiles is near 0. With tiles at 1:1 each object is whole, clear of
    inner edges, in some tile (20 px << 115 px): recall 1, boxes exact, no duplicates."""
    rng = np.random.default_rng(0)
    w, h = 4000, 3000
    large = [(2, (300, 400, 1500, 1300)), (3, (2600, 1800, 3700, 2900))]
    taken = np.zeros((h, w), bool)
    for _, (x1, y1, x2, y2) in large:
        taken[max(y1 - 40, 0):y2 + 40, max(x1 - 40, 0):x2 + 40] = True
    small = []
    while len(small) < 40:
        sw, sh = rng.integers(12, 21, 2)
        x1, y1 = int(rng.integers(0, w - sw)), int(rng.integers(0, h - sh))
        if taken[y1:y1 + sh, x1:x1 + sw].any():
            continue
        taken[max(y1 - 30, 0):y1 + sh + 30, max(x1 - 30, 0):x1 + sw + 30] = True   # apart: no merged groups
        small.append((int(rng.integers(0, 4)), (x1, y1, x1 + int(sw), y1 + int(sh))))
    img = scene(w, h, large + small)

    def recall(result, objects):
        found = 0
        for label, box in objects:
            same = result.boxes.xyxy[result.labels == label]
            if len(same) and box_iou(torch.tensor([box], dtype=torch.float32), same).max() >= 0.5:
                found += 1
        return found / len(objects)

    from torchvision.ops import box_iou
    det = ComponentDetector()
    predictor = Predictor(det, imgsz=640, conf=0.5)
    tiler = Predictor(det, imgsz=640, conf=0.5, tile=640, overlap=0.2, batch=8)
    predictor(img), tiler(img)                                  # warm-up (the fused copy, caches)
    t0 = time.perf_counter()
    (plain,) = predictor(img)
    t1 = time.perf_counter()
    (tiled,) = tiler(img)
    t2 = time.perf_counter()
    n_tiles = len(tile_windows(w, h, 640, 0.2))
    print(f"\n4000x3000, 40 small objects (12-20 px), 2 large; imgsz 640: recall of the small ones "
          f"{recall(plain, small):.2f} in one pass ({1000 * (t1 - t0):.0f} ms), {recall(tiled, small):.2f} with "
          f"{n_tiles} tiles of 640 + the full pass ({1000 * (t2 - t1):.0f} ms); large: "
          f"{recall(plain, large):.2f} / {recall(tiled, large):.2f}")
    assert recall(plain, small) <= 0.2
    assert recall(tiled, small) == 1.0                          # >= 0.95 asked; the stand-in is exact at 1:1
    assert recall(plain, large) == recall(tiled, large) == 1.0  # the full pass in tiled mode
    assert len(tiled) == 42                                     # no duplicates, no fragments of the large ones
    assert {(l, tuple(float(v) for v in b)) for l, b in small} <= set(boxes_of(tiled))   # small boxes exact
