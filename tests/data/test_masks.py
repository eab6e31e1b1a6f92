"""Instance masks read from annotation files: COCO polygons and RLE, YOLO-seg polygons, the
problems counted, laziness, to_coco and the exports, and the synthetic set's exact masks.

The truths are hand-made: tiny images whose mask pixels are written out by hand (COCO's rule:
a polygon covers the pixels whose centres lie inside it), and the synthetic images' pixels.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from rtdetr.core.masks import decode_rle, encode_rle, segmentation_to_mask
from rtdetr.data import DatasetError, DatasetWarning, export_coco, export_yolo, load_dataset, make_synthetic_dataset
from rtdetr.data.masks import MASKS, box_mask, object_mask, read_segmentation
from rtdetr.data.synthetic import COLOURS
from tests.data.helpers import write_coco, write_voc, write_yolo

# A 7 x 5 image; the object covers columns 1..3 and rows 1..2 (6 pixels), written three ways.
W, H = 7, 5
HAND = np.zeros((H, W), bool)
HAND[1:3, 1:4] = True
POLYGON = [[1, 1, 4, 1, 4, 3, 1, 3]]             # corners of the pixels' square, in pixels
# Column-major runs starting with zeros: 5 + 1 zeros, 2 ones, 2 + 1 zeros, 2 ones, 3 zeros,
# 2 ones, 2 + 3 * 5 zeros.
UNCOMPRESSED = {"size": [H, W], "counts": [6, 2, 3, 2, 3, 2, 17]}
# The same runs in COCO's string code: one char (48 + value) each, from the fourth run on as
# the difference to the run two before: 6, 2, 3, 2-2, 3-3, 2-2, 17-3 -> "6", "2", "3", "0", "0", "0", ">"
COMPRESSED = {"size": [H, W], "counts": "623000>"}
BOX = [1, 1, 3, 2]  # x, y, w, h


def hand_set(tmp_path, **kwargs):
    """One 7 x 5 image with the same object as a polygon, a compressed and an uncompressed RLE,
    and a crowd object (uncompressed RLE)."""
    anns = [{"image_id": 1, "category_id": 1, "bbox": BOX, "segmentation": seg}
            for seg in (POLYGON, COMPRESSED, UNCOMPRESSED)]
    anns.append({"image_id": 1, "category_id": 1, "bbox": BOX, "segmentation": UNCOMPRESSED, "iscrowd": 1})
    write_coco(tmp_path, "train", [(1, "a.png", W, H)], anns, [(1, "thing")])
    return load_dataset(tmp_path, "train", **kwargs)


def test_polygon_and_both_rles_give_the_hand_mask(tmp_path):
    ds = hand_set(tmp_path, masks=True)
    image, target = ds[0]
    masks = target[MASKS]
    assert type(masks).__name__ == "Mask" and masks.dtype.is_floating_point is False
    assert tuple(masks.shape) == (3, H, W)                 # the crowd object stays out of training
    for mask in masks.numpy():
        assert np.array_equal(mask.astype(bool), HAND)
    assert len(target["boxes"]) == 3 and image.shape[1:] == (H, W)


def test_to_coco_keeps_the_segmentations(tmp_path):
    """Polygons in pixels as given; RLE with str counts (the uncompressed one compressed, as
    above); the crowd's too; `area` stays COCO's box area."""
    anns = hand_set(tmp_path, masks=True).to_coco()["annotations"]
    assert anns[0]["segmentation"] == [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]]
    assert [a["segmentation"] for a in anns[1:]] == [COMPRESSED] * 3
    assert anns[3]["iscrowd"] == 1 and all(a["area"] == 6 for a in anns)
    json.dumps(anns)  # JSON-ready


def test_without_masks_nothing_changes(tmp_path, demo_root):
    ds = hand_set(tmp_path)
    assert not ds.masks and MASKS not in ds[0][1] and ds.records[0].segmentations is None
    assert all("segmentation" not in a for a in ds.to_coco()["annotations"])
    demo = load_dataset(demo_root, "train")                # the synthetic json has segmentations
    assert all(MASKS not in demo.get_target(i) for i in range(len(demo)))
    assert all("segmentation" not in a for a in demo.to_coco()["annotations"])


def test_records_keep_raw_segmentations_only(tmp_path, demo_root):
    """No pixels in the records: polygons as 1-D coordinate arrays, RLE as str counts."""
    ds = hand_set(tmp_path, masks=True)
    polygon, compressed, uncompressed, crowd = ds.records[0].segmentations
    assert len(polygon) == 1 and polygon[0].shape == (8,) and polygon[0].dtype == np.float64
    assert compressed == uncompressed == crowd == COMPRESSED
    for r in load_dataset(demo_root, "train", masks=True).records:
        assert len(r.segmentations) == len(r.boxes)
        assert all(isinstance(s, dict) and isinstance(s["counts"], str) for s in r.segmentations)


def test_yolo_seg_polygon_gives_the_coco_polygon_mask(tmp_path):
    """A triangle as a YOLO-seg line (normalised) and as a COCO polygon (pixels) on a 100 x 50
    image: the same mask; its box is the polygon's extent. A box line in the same file gets its
    filled box (hand-computed: columns 40..59, rows 20..29) and counts as no_mask."""
    pixels = [10, 5, 60, 5, 35, 40]
    normalised = " ".join(f"{v / s:g}" for v, s in zip(pixels, [100, 50] * 3))
    write_yolo(tmp_path / "yolo", ["thing"], {"a": f"0 {normalised}\n0 0.5 0.5 0.2 0.2\n"})
    with pytest.warns(DatasetWarning, match="1 object without a segmentation, its box used as its mask"):
        yolo = load_dataset(tmp_path / "yolo", "train", masks=True)
    write_coco(tmp_path / "coco", "train", [(1, "a.png", 100, 50)],
               [{"image_id": 1, "category_id": 0, "bbox": [10, 5, 50, 35], "segmentation": [pixels]}],
               [(0, "thing")])
    coco = load_dataset(tmp_path / "coco", "train", masks=True)
    _, target = yolo[0]
    assert target["boxes"].tolist() == [[10, 5, 60, 40], [40, 20, 60, 30]]
    triangle, box = target[MASKS].numpy().astype(bool)
    assert np.array_equal(triangle, coco[0][1][MASKS][0].numpy().astype(bool))
    assert 0.9 * 875 < triangle.sum() < 1.1 * 875          # half of the 50 x 35 box
    expected = np.zeros((50, 100), bool)
    expected[20:30, 40:60] = True
    assert np.array_equal(box, expected)
    assert load_dataset(tmp_path / "yolo", "train").records[0].segmentations is None


def test_round_trip_mask_to_rle_to_mask():
    """Random masks -> compressed RLE -> read as a record's segmentation -> rasterised: the same."""
    rng = np.random.default_rng(0)
    masks = rng.random((6, 13, 17)) < 0.4
    for mask, rle in zip(masks, encode_rle(masks)):
        segmentation, problem = read_segmentation(json.loads(json.dumps(rle)), 13, 17)
        assert problem is None
        assert np.array_equal(object_mask(segmentation, [0, 0, 1, 1], 13, 17), mask)
        assert np.array_equal(decode_rle(segmentation), mask)
    # A tensor (masks pasted by the model) gives the same codes; one [H, W] mask is one RLE.
    assert encode_rle(torch.from_numpy(masks)) == encode_rle(masks)
    assert encode_rle(masks[0]) == encode_rle(masks)[:1]


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4)])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_rle_of_a_wrong_shape_is_one_line(shape, as_tensor):
    masks = torch.zeros(shape, dtype=torch.bool) if as_tensor else np.zeros(shape, bool)
    with pytest.raises(ValueError, match=rf"masks must be \[N, H, W\] or \[H, W\], got shape \{list(shape)}"):
        encode_rle(masks)


def problems_set(tmp_path):
    """A 20 x 10 image; every object's box is (2, 3)-(6, 8) but the last one's (2.4, 3)-(6.6, 8)."""
    segs = [
        "none",                                            # no segmentation key: no_mask
        [],                                                # an empty list (box-only exports): no_mask
        [[1, 1, 4, 1]],                                    # two points: bad_mask
        {"size": [9, 9], "counts": "0<"},                  # another image's size: bad_mask
        {"size": [10, 20], "counts": "!!"},                # not COCO's string code: bad_mask
        {"size": [10, 20], "counts": [5, 3]},              # runs short of the image: bad_mask
        "abc",                                             # neither polygons nor RLE: bad_mask
    ]
    anns = [{"image_id": 1, "category_id": 1, "bbox": [2, 3, 4, 5], **({} if s == "none" else {"segmentation": s})}
            for s in segs]
    anns[-1]["bbox"] = [2.4, 3, 4.2, 5]
    # a box outside the image is dropped as such; its bad segmentation is not counted again
    anns.append({"image_id": 1, "category_id": 1, "bbox": [30, 3, 4, 5], "segmentation": [[0, 0]]})
    write_coco(tmp_path, "train", [(1, "b.png", 20, 10)], anns, [(1, "thing")])


def test_missing_and_malformed_segmentations_are_counted_once_and_become_boxes(tmp_path):
    problems_set(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(tmp_path, "train", masks=True)
        image, target = ds[0]                              # serving a sample warns nothing more
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 1
    assert "2 objects without a segmentation, its box used as its mask (1 file: b.png)" in messages[0]
    assert "5 malformed segmentations, its box used as its mask (1 file: b.png)" in messages[0]
    assert "1 box entirely outside the image, dropped" in messages[0]
    masks = target[MASKS].numpy().astype(bool)
    assert masks.shape == (7, 10, 20)
    expected = np.zeros((10, 20), bool)
    expected[3:8, 2:6] = True                              # pixel centres inside (2, 3)-(6, 8)
    assert all(np.array_equal(m, expected) for m in masks[:-1])
    expected[3:8, 6] = True                                # centre 6.5 < 6.6, 2.5 >= 2.4
    assert np.array_equal(masks[-1], expected)
    assert all("segmentation" not in a for a in ds.to_coco()["annotations"])  # none usable
    with pytest.warns(DatasetWarning, match="outside"):   # no masks: segmentations not even checked
        assert load_dataset(tmp_path, "train").records[0].segmentations is None


def test_a_box_thinner_than_a_pixel_still_gets_a_pixel():
    assert np.argwhere(box_mask([3.6, 1.0, 3.9, 2.0], 4, 6)).tolist() == [[1, 3]]
    assert box_mask([0, 0, 6, 4], 4, 6).all()


def test_voc_has_no_masks(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("cat", 0, 1, 1, 10, 10)]}})
    assert len(load_dataset(tmp_path, "train")) == 1
    with pytest.raises(DatasetError, match="no instance masks") as e:
        load_dataset(tmp_path, "train", masks=True)
    assert "\n" not in str(e.value)


def test_exports_keep_the_masks(tmp_path):
    """COCO export: the segmentations as they were. YOLO export: a one-polygon object becomes a
    polygon line, read back as the same mask."""
    anns = [{"image_id": 1, "category_id": 1, "bbox": [10, 5, 50, 35], "segmentation": [[10, 5, 60, 5, 35, 40]]},
            {"image_id": 1, "category_id": 1, "bbox": [62, 10, 20, 30],
             "segmentation": [[62, 10, 82, 10, 82, 40, 62, 40]]}]
    write_coco(tmp_path / "src", "train", [(1, "a.png", 100, 50)], anns, [(1, "thing")])
    ds = load_dataset(tmp_path / "src", "train", masks=True)
    masks = ds[0][1][MASKS]
    coco = load_dataset(export_coco(ds, tmp_path / "coco"), "train", masks=True)
    assert coco.to_coco()["annotations"] == ds.to_coco()["annotations"]
    yolo = load_dataset(export_yolo(tmp_path / "src", tmp_path / "yolo", masks=True), "train", masks=True)
    assert yolo[0][1][MASKS].equal(masks)
    assert (tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()[0].count(" ") == 6


# ---------------------------------------------------------------- the synthetic set


def test_synthetic_masks_are_the_visible_pixels_of_each_shape(demo_root, other_root):
    """PNG: every mask pixel has its object's colour (within noise), every other pixel of its box
    that no mask holds does not; masks do not overlap; an object no later shape overlaps has its
    annotated box as its mask's tight box."""
    checked = whole = 0
    for root in (demo_root, other_root):
        ds = load_dataset(root, "train", masks=True)
        colours = np.array([COLOURS[name.split("_")[0]] for name in ds.class_names], dtype=float)
        for i in range(len(ds)):
            image, target = ds[i]
            pixels = image.numpy().transpose(1, 2, 0).astype(float)
            masks = target[MASKS].numpy().astype(bool)
            boxes = target["boxes"].numpy().astype(int)    # whole pixels: the shapes' boxes
            assert masks.sum(0).max(initial=0) <= 1
            for j, (mask, (x1, y1, x2, y2), label) in enumerate(zip(masks, boxes, target["labels"].tolist())):
                fill = np.median(pixels[mask], axis=0)
                assert np.argmin(((colours - fill) ** 2).sum(1)) == label
                # noise of sd 6 per channel: 40 is over 6 sd; the background is at least 80 away
                distance = np.linalg.norm(pixels - fill, axis=2)
                assert (distance[mask] < 40).all()
                rest = np.zeros_like(mask)
                rest[y1:y2, x1:x2] = True
                assert (distance[rest & ~masks.any(0)] > 40).all()
                later = boxes[j + 1:]
                if not ((later[:, 0] < x2) & (later[:, 2] > x1) & (later[:, 1] < y2) & (later[:, 3] > y1)).any():
                    ys, xs = np.nonzero(mask)
                    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]
                    whole += 1
                checked += 1
    assert checked >= 20 and whole >= 10


def test_synthetic_jpeg_masks_are_the_drawn_shapes(tmp_path):
    tiny = dict(num_train=3, num_val=1, image_size=(48, 64), objects_per_image=(2, 4), seed=3)
    png = json.loads((make_synthetic_dataset(tmp_path / "p", **tiny) / "annotations/instances_train.json").read_text())
    jpg = json.loads((make_synthetic_dataset(tmp_path / "j", image_format="jpg", **tiny)
                      / "annotations/instances_train.json").read_text())
    assert [a["segmentation"] for a in png["annotations"]] == [a["segmentation"] for a in jpg["annotations"]]
    for a in png["annotations"]:  # visible pixels within the box, not more than the box
        mask = segmentation_to_mask(a["segmentation"], 48, 64)
        x, y, w, h = a["bbox"]
        assert 0 < mask.sum() <= a["area"] and mask[y:y + h, x:x + w].sum() == mask.sum()
