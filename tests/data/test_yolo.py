"""YOLO txt: data.yaml forms, label lines, annotation problems, errors, Roboflow layout."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from rtdetr.data import DatasetError, DatasetWarning, detect_format, list_splits, load_dataset
from tests.data.helpers import write_image, write_yolo


def load_quietly(path, split="train"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(path, split)


def one_line_error(path, match, split="train"):
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(path, split)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_boxes_are_denormalised_to_pixels(tmp_path):
    write_yolo(tmp_path, ["cat", "dog"], {"a": "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2\n"}, sizes={"a": (100, 50)})
    ds = load_quietly(tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.category_ids == [0, 1]
    image, target = ds[0]
    assert image.shape == (3, 50, 100)
    assert np.allclose(target["boxes"], [[40, 15, 60, 35], [0, 0, 20, 10]])
    assert target["labels"].tolist() == [1, 0]
    assert ds.records[0].file_name == "a.png" and target["image_id"] == 1


def test_names_as_a_dict_with_gaps_and_unknown_classes(tmp_path):
    labels = {"a": "5 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n"}
    write_yolo(tmp_path, {0: "zero", 5: "five"}, labels)
    with pytest.warns(DatasetWarning) as caught:
        ds = load_dataset(tmp_path)
    assert ds.category_ids == [0, 5] and ds.class_names == ["zero", "five"]
    assert ds[0][1]["labels"].tolist() == [1, 0]
    assert "1 box with an unknown category, dropped (1 file: labels/train/a.txt)" in str(caught[0].message)


def test_negatives_missing_and_empty_label_files(tmp_path):
    write_yolo(tmp_path, ["cat"], {"a": "0 0.5 0.5 0.2 0.2\n", "b": "", "c": None})
    ds = load_quietly(tmp_path)
    assert [len(r.boxes) for r in ds.records] == [1, 0, 0]


def test_polygon_lines_become_their_bounding_box(tmp_path):
    write_yolo(tmp_path, ["cat"], {"a": "0 0.1 0.2 0.5 0.2 0.3 0.8\n"}, sizes={"a": (100, 50)})
    assert np.allclose(load_quietly(tmp_path)[0][1]["boxes"], [[10, 10, 50, 40]])


def test_label_problems_are_fixed_counted_and_reported_once(tmp_path):
    labels = {
        "a": "0 0.9 0.5 0.4 0.2\n"          # sticks out on the right: clipped
             "0 0.5 0.5 0.2\n"              # 4 numbers: malformed
             "zero 0.5 0.5 0.2 0.2\n"       # not a number: malformed
             "0.5 0.5 0.5 0.2 0.2\n",       # fractional class: malformed
        "b": "0 0.5 0.5 0 0.2\n"            # zero width: dropped
             "0 0.5 0.5 -0.1 0.2\n"         # negative width: dropped
             "0 1.5 1.5 0.2 0.2\n"          # outside: dropped
             "0 0.5 0.5 0.2 0.2\n\n",       # fine (blank line ignored)
    }
    write_yolo(tmp_path, ["cat"], labels, sizes={"a": (100, 50), "b": (100, 50)})
    with pytest.warns(DatasetWarning) as caught:
        ds = load_dataset(tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert np.allclose(ds.records[0].boxes, [[70, 20, 100, 30]])
    assert len(ds.records[1].boxes) == 1
    assert "data.yaml: 7 annotation problems fixed while loading split 'train'" in message
    assert "1 box partly outside the image, clipped (1 file: labels/train/a.txt)" in message
    assert "3 malformed annotations, dropped (1 file: labels/train/a.txt)" in message
    assert "2 boxes with zero or negative size, dropped (1 file: labels/train/b.txt)" in message
    assert "1 box entirely outside the image, dropped (1 file: labels/train/b.txt)" in message


def test_unreadable_images_are_dropped(tmp_path):
    write_yolo(tmp_path, ["cat"], {"a": "0 0.5 0.5 0.2 0.2\n", "b": ""})
    (tmp_path / "images/train/b.png").write_bytes(b"garbage")
    with pytest.warns(DatasetWarning, match=r"1 unreadable image file, image dropped \(1 file: b\.png\)"):
        ds = load_dataset(tmp_path)
    assert len(ds) == 1


def test_roboflow_yolo_layout(tmp_path):
    for split in ("train", "valid"):
        write_image(tmp_path / split / "images" / "x.jpg", 40, 20)
        (tmp_path / split / "labels").mkdir(parents=True)
        (tmp_path / split / "labels" / "x.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['ball']\n")
    assert detect_format(tmp_path) == "yolo"
    assert list_splits(tmp_path) == ["train", "val"]
    ds = load_quietly(tmp_path, "valid")
    assert ds.split == "val" and ds.records[0].path == tmp_path / "valid/images/x.jpg"
    assert ds[0][1]["boxes"].tolist() == [[10, 5, 30, 15]]


def test_path_key_and_image_list_files(tmp_path):
    root = tmp_path / "data"
    write_image(root / "images" / "one" / "a.png", 10, 10)
    write_image(root / "images" / "two" / "b.png", 10, 10)
    (root / "labels" / "two").mkdir(parents=True)
    (root / "labels" / "two" / "b.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "val.txt").write_text("images/one/a.png\nimages/two/b.png\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "data.yaml").write_text("path: ../data\ntrain: images\nval: val.txt\nnames: [a]\n")
    train = load_quietly(tmp_path / "config" / "data.yaml", "train")
    assert [r.file_name for r in train.records] == ["one/a.png", "two/b.png"]
    val = load_quietly(tmp_path / "config", "val")
    assert [len(r.boxes) for r in val.records] == [0, 1]


@pytest.mark.parametrize("yaml_text, match", [
    ("train: [images\nnames: [a]", r"data\.yaml: invalid YAML \(line \d\)"),
    ("train: images/train\n", r"data\.yaml: not a YOLO data\.yaml \(no 'names'\)"),
    ("train: images/train\nnames: 3\n", "'names' must be a list or a dict"),
    ("train: images/train\nnames: []\n", "'names' is empty"),
    ("train: images/train\nnames: {a: b}\n", "'names' must be a list or a dict"),
    ("train: images/train\nnc: 2\nnames: [a]\n", "nc is 2 but 'names' has 1 entries"),
    ("val: images/val\nnames: [a]\n", r"no 'train' entry \(has: val\)"),
    ("train: images/elsewhere\nnames: [a]\n", r"images/elsewhere: no such folder or file \(the 'train' entry of"),
])
def test_data_yaml_errors(tmp_path, yaml_text, match):
    write_yolo(tmp_path, ["a"], {"a": ""})
    (tmp_path / "data.yaml").write_text(yaml_text)
    one_line_error(tmp_path, match)


def test_no_images_and_no_yaml(tmp_path):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    one_line_error(tmp_path, r"images/train: no images$")
    (tmp_path / "data.yaml").unlink()
    one_line_error(tmp_path, "no data set found")
