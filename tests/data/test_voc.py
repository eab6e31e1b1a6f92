"""Pascal VOC xml: coordinates, classes, difficult objects, annotation problems, errors, layouts."""
from __future__ import annotations

import warnings

import pytest

from rtdetr.data import DatasetError, DatasetWarning, detect_format, list_splits, load_dataset
from rtdetr.data.voc import VOC_CLASSES
from tests.data.helpers import write_image, write_voc


def load_quietly(path, split="train"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(path, split)


def test_one_based_inclusive_coordinates(tmp_path):
    write_voc(tmp_path, {"train": {"000001": [("dog", 0, 1, 1, 10, 20)]}})
    target = load_quietly(tmp_path)[0][1]
    assert target["boxes"].tolist() == [[0, 0, 10, 20]]
    assert target["orig_size"].tolist() == [80, 60]


def test_voc_classes_are_used_when_every_name_is_one(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("dog", 0, 1, 1, 10, 10), ("aeroplane", 0, 1, 1, 10, 10)]}})
    ds = load_quietly(tmp_path)
    assert ds.class_names == list(VOC_CLASSES) and ds.category_ids == list(range(1, 21))
    assert ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog"), 0]


def test_other_names_are_collected_from_every_split(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("zebra", 0, 1, 1, 10, 10)]},
                         "val": {"b": [("ant", 0, 1, 1, 10, 10)], "c": []}})
    train, val = load_quietly(tmp_path, "train"), load_quietly(tmp_path, "val")
    assert train.class_names == val.class_names == ["ant", "zebra"]
    assert train[0][1]["labels"].tolist() == [1]
    assert [len(r.boxes) for r in val.records] == [1, 0]  # negatives kept


def test_classes_txt_orders_the_labels_and_unknown_names_are_dropped(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("zebra", 0, 1, 1, 10, 10), ("unicorn", 0, 1, 1, 10, 10)]}},
              classes=["zebra", "ant"])
    with pytest.warns(DatasetWarning, match=r"1 box with an unknown category, dropped \(1 file: Annotations/a\.xml\)"):
        ds = load_dataset(tmp_path)
    assert ds.class_names == ["zebra", "ant"] and ds[0][1]["labels"].tolist() == [0]


def test_difficult_objects_are_ignored_like_coco_crowd(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("dog", 0, 1, 1, 10, 10), ("cat", 1, 21, 21, 40, 40)]}})
    ds = load_quietly(tmp_path)
    assert ds[0][1]["boxes"].tolist() == [[0, 0, 10, 10]]
    coco = ds.to_coco()
    assert [(a["category_id"], a["iscrowd"]) for a in coco["annotations"]] == [
        (VOC_CLASSES.index("dog") + 1, 0), (VOC_CLASSES.index("cat") + 1, 1)]


def test_xml_problems_are_fixed_counted_and_reported_once(tmp_path):
    write_voc(tmp_path, {"train": {
        "a": [("dog", 0, 1, 1, 100, 10), ("dog", 0, 6, 5, 5, 10), ("dog", 0, "x", 1, 5, 5)],
        "b": [("dog", 0, 1, 1, 10, 10)],
        "c": [("dog", 0, 1, 1, 10, 10)],
        "d": [],
    }})
    (tmp_path / "Annotations/b.xml").write_text("<annotation><object>")
    (tmp_path / "JPEGImages/c.jpg").unlink()
    (tmp_path / "Annotations/d.xml").write_text(
        (tmp_path / "Annotations/d.xml").read_text().replace("<width>80</width>", "<width>81</width>"))
    with pytest.warns(DatasetWarning) as caught:
        ds = load_dataset(tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert [r.path.stem for r in ds.records] == ["a", "d"]
    assert ds.records[0].boxes.tolist() == [[0, 0, 80, 10]]
    assert (ds.records[1].width, ds.records[1].height) == (80, 60)
    assert "1 box partly outside the image, clipped (1 file: Annotations/a.xml)" in message
    assert "1 box with zero or negative size, dropped (1 file: Annotations/a.xml)" in message
    assert "1 malformed annotation, dropped (1 file: Annotations/a.xml)" in message
    assert "1 missing or unparsable annotation file, image dropped (1 file: Annotations/b.xml)" in message
    assert "1 missing image file, image dropped (1 file: c.jpg)" in message
    assert "1 image whose size differs from its annotation's, the image's size used (1 file: Annotations/d.xml)" \
        in message


def test_missing_split_file_names_the_splits_found(tmp_path):
    write_voc(tmp_path, {"train": {"a": []}, "trainval": {"a": []}})
    (tmp_path / "ImageSets/Main/dog_train.txt").write_text("a 1\n")
    with pytest.raises(DatasetError, match=r"Main/val\.txt: no such split file \(splits found: train, trainval\)$"):
        load_dataset(tmp_path, "val")
    assert list_splits(tmp_path) == ["train", "trainval"]


def test_without_image_sets_every_annotation_is_used_with_a_warning(tmp_path):
    write_voc(tmp_path, {"train": {"a": [], "b": []}})
    (tmp_path / "ImageSets/Main/train.txt").unlink()
    (tmp_path / "ImageSets/Main").rmdir()
    with pytest.warns(DatasetWarning, match="no ImageSets/Main split files: split 'val' is all 2 annotation files"):
        assert len(load_dataset(tmp_path, "val")) == 2


def test_png_images_and_ids_without_filename(tmp_path):
    write_voc(tmp_path, {"train": {"a": []}})
    (tmp_path / "JPEGImages/a.jpg").unlink()
    write_image(tmp_path / "JPEGImages/a.png", 80, 60)
    (tmp_path / "Annotations/a.xml").write_text("<annotation><object><name>dog</name><bndbox><xmin>2</xmin>"
                                                 "<ymin>2</ymin><xmax>5.5</xmax><ymax>6</ymax></bndbox></object>"
                                                 "</annotation>")
    ds = load_quietly(tmp_path)
    assert ds.records[0].path.name == "a.png" and ds.records[0].boxes.tolist() == [[1, 1, 5.5, 6]]


def test_nested_and_ambiguous_roots(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2007", {"train": {"a": []}})
    assert detect_format(tmp_path) == "voc"
    assert len(load_quietly(tmp_path)) == 1
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", {"train": {"a": []}})
    with pytest.raises(DatasetError, match=r"several VOC data sets inside \(VOC2007, VOC2012\); pass one$"):
        load_dataset(tmp_path / "VOCdevkit")


def test_the_class_list_is_the_same_for_every_split(tmp_path):
    write_voc(tmp_path, {"train": {"a": [("dog", 0, 1, 1, 10, 10)]}, "val": {"b": [("zebra", 0, 1, 1, 10, 10)]}})
    assert load_quietly(tmp_path, "train").class_names == load_quietly(tmp_path, "val").class_names == ["dog", "zebra"]
