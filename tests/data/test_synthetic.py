"""The built-in synthetic data set: determinism, contents, parameters."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rtdetr.data import load_dataset, make_synthetic_dataset
from rtdetr.data.synthetic import COLOURS
from tests.data.conftest import OTHER, SMALL

TINY = dict(num_train=3, num_val=2, image_size=(48, 64), objects_per_image=(1, 3))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    a = _files(make_synthetic_dataset(tmp_path / "a", seed=5, **TINY))
    b = _files(make_synthetic_dataset(tmp_path / "b", seed=5, **TINY))
    assert "annotations/instances_train.json" in a and "val/val_00001.png" in a
    assert a == b  # annotation json and images byte-identical


def test_other_seed_gives_other_data(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", seed=0, **TINY)
    b = make_synthetic_dataset(tmp_path / "b", seed=1, **TINY)
    for name in ("annotations/instances_train.json", "train/train_00000.png"):
        assert (a / name).read_bytes() != (b / name).read_bytes()


def test_an_image_does_not_depend_on_the_number_of_images(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", **{**TINY, "num_train": 2})
    b = make_synthetic_dataset(tmp_path / "b", **{**TINY, "num_train": 4})
    assert (a / "train/train_00001.png").read_bytes() == (b / "train/train_00001.png").read_bytes()
    assert (a / "val/val_00000.png").read_bytes() == (b / "val/val_00000.png").read_bytes()


def test_demo_set_classes_and_layout(demo_root):
    data = json.loads((demo_root / "annotations/instances_train.json").read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert len(data["images"]) == SMALL["num_train"]
    ds = load_dataset(demo_root, "val")
    assert ds.class_names == ["red_rectangle", "green_ellipse", "blue_triangle"]
    assert ds.category_ids == [1, 2, 3]
    assert len(ds) == SMALL["num_val"]


def test_some_images_are_empty_and_the_others_hold_several_shapes(demo_root):
    ds = load_dataset(demo_root, "train")
    counts = [len(r.boxes) for r in ds.records]
    assert counts.count(0) == round(SMALL["empty_fraction"] * SMALL["num_train"])
    assert max(counts) >= 2
    for r in ds.records:
        assert (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
        assert (r.boxes[:, :2] >= 0).all()


def test_shapes_are_drawn_in_their_boxes_in_their_class_colour(demo_root):
    """The centre pixel of a box (filled for every default shape) has its class's colour."""
    ds = load_dataset(demo_root, "train")
    colours = np.array([COLOURS[name.split("_")[0]] for name in ds.class_names], dtype=float)
    checked = 0
    for i in range(len(ds)):
        image, target = ds[i]
        pixels = image.numpy().astype(float)
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            # triangles are filled below their centre: sample a little lower
            cx, cy = int((x1 + x2) / 2), int(y1 + 0.6 * (y2 - y1))
            patch = pixels[:, cy - 1:cy + 2, cx - 1:cx + 2].mean(axis=(1, 2))
            nearest = np.argmin(((colours - patch) ** 2).sum(axis=1))
            overlapped = sum(1 for b in target["boxes"].tolist() if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]) > 1
            if not overlapped:
                assert nearest == label, (i, label, patch)
                checked += 1
    assert checked >= 3


def test_a_second_set_with_other_parameters(other_root):
    ds = load_dataset(other_root, "train")
    # classes are made in the order given (cross=42, diamond=3, ellipse=17); labels follow sorted ids
    assert ds.category_ids == [3, 17, 42]
    assert ds.class_names == ["cyan_diamond", "magenta_ellipse", "orange_cross"]
    (h_lo, h_hi), (w_lo, w_hi) = OTHER["image_size"]
    sizes = {(r.width, r.height) for r in ds.records}
    assert all(w_lo <= w <= w_hi and h_lo <= h <= h_hi for w, h in sizes)
    assert len(sizes) > 1
    coco = ds.to_coco()
    assert {a["category_id"] for a in coco["annotations"]} <= {3, 17, 42}


def test_jpeg_output(tmp_path):
    root = make_synthetic_dataset(tmp_path, image_format="jpg", **TINY)
    assert (root / "train/train_00000.jpg").is_file()
    assert load_dataset(root)[0][0].shape[1:] == (48, 64)


@pytest.mark.parametrize("kwargs", [
    dict(shapes=("hexagon",)), dict(colours=("mauve",)), dict(num_classes=2, category_ids=[5, 5]),
    dict(num_classes=3, category_ids=[1, 2]), dict(image_format="gif"),
    dict(num_classes=3, shapes=("ellipse",), colours=("red",)),
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, **{**TINY, **kwargs})
