"""The three formats agree: synthetic set -> export -> read back gives the same annotations;
each layout is recognised from its files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rtdetr.data import (DatasetError, DetectionDataset, detect_format, export_coco, export_voc, export_yolo,
                         list_splits, load_dataset)
from tests.data.helpers import boxes_by_file

EXPORTS = {"coco": export_coco, "yolo": export_yolo, "voc": export_voc}


@pytest.fixture(scope="module", params=["demo_root", "other_root"])
def source(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    return {fmt: export(source, out / fmt) for fmt, export in EXPORTS.items()}


@pytest.mark.parametrize("fmt", EXPORTS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_round_trip_gives_the_same_boxes_labels_and_names(source, exported, fmt, split):
    original = load_dataset(source, split)
    back = load_dataset(exported[fmt], split)
    assert detect_format(exported[fmt]) == fmt
    assert back.class_names == original.class_names
    assert back.split == split
    a, b = boxes_by_file(original), boxes_by_file(back)
    assert a.keys() == b.keys()
    for stem in a:
        (boxes_a, labels_a), (boxes_b, labels_b) = a[stem], b[stem]
        assert np.array_equal(labels_a, labels_b), stem
        assert np.abs(boxes_a - boxes_b).max(initial=0) <= 1.0, stem
    sizes = {r.file_name: (r.width, r.height) for r in original.records}
    assert sorted(sizes.values()) == sorted((r.width, r.height) for r in back.records)


def test_coco_export_keeps_the_original_category_ids(other_root, tmp_path):
    back = load_dataset(export_coco(other_root, tmp_path), "val")
    assert back.category_ids == [3, 17, 42]
    original = json.loads((other_root / "annotations/instances_val.json").read_text())
    again = back.to_coco()
    assert [a["bbox"] for a in again["annotations"]] == [a["bbox"] for a in original["annotations"]]
    assert [a["category_id"] for a in again["annotations"]] == [a["category_id"] for a in original["annotations"]]


def test_export_of_a_single_dataset_and_crowd_handling(demo_root, tmp_path):
    ds = load_dataset(demo_root, "train")
    record = next(r for r in ds.records if len(r.boxes))
    record.iscrowd[0] = True  # one crowd box: YOLO leaves it out, VOC makes it difficult
    yolo = load_dataset(export_yolo(ds, tmp_path / "yolo"), "train")
    voc = load_dataset(export_voc(ds, tmp_path / "voc"), "train")
    stem = record.path.stem
    n = len(record.boxes)
    assert len(next(r for r in yolo.records if r.path.stem == stem).boxes) == n - 1
    voc_record = next(r for r in voc.records if r.path.stem == stem)
    assert voc_record.iscrowd.tolist() == record.iscrowd.tolist()
    assert len(voc.get_target(voc.records.index(voc_record))["boxes"]) == n - 1
    assert sum(a["iscrowd"] for a in voc.to_coco()["annotations"]) == 1
    assert list_splits(tmp_path / "yolo") == ["train"]


def test_export_refuses_splits_with_different_classes(demo_root, other_root, tmp_path):
    with pytest.raises(DatasetError, match="different classes"):
        export_yolo([load_dataset(demo_root, "train"), load_dataset(other_root, "val")], tmp_path)


# ---------------------------------------------------------------- recognising layouts


def test_each_layout_is_recognised(demo_root, exported, tmp_path):
    assert detect_format(demo_root) == "coco"
    assert detect_format(demo_root / "annotations/instances_val.json") == "coco"
    assert detect_format(exported["yolo"]) == "yolo"
    assert detect_format(exported["yolo"] / "data.yaml") == "yolo"
    assert detect_format(exported["voc"]) == "voc"
    nested = tmp_path / "VOCdevkit"
    shutil.copytree(exported["voc"], nested / "VOC2007")
    assert detect_format(nested) == "voc"
    assert len(load_dataset(nested, "val")) == len(load_dataset(exported["voc"], "val"))
    assert list_splits(demo_root) == list_splits(exported["yolo"]) == list_splits(exported["voc"]) == ["train", "val"]


def test_a_json_file_names_its_own_split(demo_root):
    ds = load_dataset(demo_root / "annotations/instances_val.json")
    assert ds.split == "val" and len(ds) == 4


def test_unknown_layouts_and_paths_give_one_line_errors(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in [(tmp_path / "stuff", "no data set found"), (tmp_path / "nope", "no such file or folder"),
                          (tmp_path / "notes.txt", "not a data set file")]:
        with pytest.raises(DatasetError, match=message) as e:
            load_dataset(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown data set format"):
        load_dataset(tmp_path / "stuff", format="kitti")


def test_format_can_be_given(demo_root):
    assert isinstance(load_dataset(demo_root, "val", format="coco"), DetectionDataset)
