"""COCO json: category ids, negatives, crowd boxes, annotation problems, errors, Roboflow layout."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from rtdetr.data import DatasetError, DatasetWarning, detect_format, list_splits, load_coco, load_dataset
from tests.data.helpers import write_coco, write_image

IMAGES = [(1, "a.png", 64, 48), (2, "b.png", 64, 48), (3, "c.png", 32, 32)]


def box(image_id, category_id, bbox, **extra):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def load_quietly(path, split="train"):
    """Load, failing if any warning is issued."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(path, split)


def load_with_warning(path, split="train"):
    """Load, expecting exactly one DatasetWarning; returns (dataset, its one-paragraph message)."""
    with pytest.warns(DatasetWarning) as caught:
        ds = load_dataset(path, split)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 1, messages
    return ds, messages[0]


# ---------------------------------------------------------------- the basics


def test_items_have_the_documented_types(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [box(1, 1, [10, 5, 20, 10]), box(1, 2, [0, 0, 64, 48])],
               [(1, "cat"), (2, "dog")])
    ds = load_quietly(tmp_path)
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format.name == "XYXY"
    assert boxes.canvas_size == (48, 64) and boxes.dtype == torch.float32
    assert boxes.tolist() == [[10, 5, 30, 15], [0, 0, 64, 48]]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 1]
    assert target["image_id"] == 1
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].tolist() == [64, 48]
    assert image[:, 0, 0].tolist() == [120, 130, 140]


def test_transforms_run_last(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [box(1, 1, [10, 5, 20, 10])], [(1, "cat")])
    ds = load_quietly(tmp_path)
    ds.transforms = lambda image, target: (image.float() / 255, {**target, "seen": True})
    image, target = ds[0]
    assert image.dtype == torch.float32 and target["seen"]


@pytest.mark.parametrize("ids", [[1, 5, 90], [0, 1, 2], [7, 42, 1000], [1000, 7, 42]])
def test_category_ids_map_to_contiguous_labels_in_sorted_order(tmp_path, ids):
    names = {cid: f"class{cid}" for cid in ids}
    anns = [box(1, cid, [i * 10, 0, 5, 5]) for i, cid in enumerate(ids)]
    write_coco(tmp_path, "train", IMAGES, anns, list(names.items()))
    ds = load_quietly(tmp_path)
    assert ds.category_ids == sorted(ids)
    assert ds.class_names == [names[cid] for cid in sorted(ids)]
    labels = ds[0][1]["labels"].tolist()
    assert labels == [sorted(ids).index(cid) for cid in ids]
    # predictions mapped back through category_ids evaluate against to_coco's original ids
    assert [ds.category_ids[label] for label in labels] == [a["category_id"] for a in ds.to_coco()["annotations"]]


def test_images_without_objects_are_kept(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [box(1, 1, [10, 5, 20, 10])], [(1, "cat")])
    ds = load_quietly(tmp_path)
    assert len(ds) == 3
    assert ds[2][1]["boxes"].shape == (0, 4) and ds[2][1]["labels"].shape == (0,)
    assert [im["id"] for im in ds.to_coco()["images"]] == [1, 2, 3]


def test_crowd_boxes_are_left_out_of_training_but_kept_for_evaluation(tmp_path):
    anns = [box(1, 1, [10, 5, 20, 10]), box(1, 1, [30, 20, 30, 25], iscrowd=1, area=321.5)]
    write_coco(tmp_path, "train", IMAGES, anns, [(1, "person")])
    ds = load_quietly(tmp_path)
    assert ds[0][1]["boxes"].tolist() == [[10, 5, 30, 15]]
    coco = ds.to_coco()
    assert [a["iscrowd"] for a in coco["annotations"]] == [0, 1]
    assert coco["annotations"][1]["area"] == 321.5  # COCO's own area is kept for evaluation
    assert coco["annotations"][0]["area"] == 200
    assert [a["id"] for a in coco["annotations"]] == [1, 2]


def test_to_coco_is_valid_coco(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [box(2, 9, [1.5, 2.25, 3, 4])], [(9, "x")])
    coco = load_quietly(tmp_path).to_coco()
    assert json.loads(json.dumps(coco)) == coco
    assert coco["categories"] == [{"id": 9, "name": "x"}]
    assert coco["annotations"] == [{"id": 1, "image_id": 2, "category_id": 9, "bbox": [1.5, 2.25, 3.0, 4.0],
                                    "area": 12.0, "iscrowd": 0}]


# ---------------------------------------------------------------- fixable problems


def test_annotation_problems_are_fixed_counted_and_reported_once(tmp_path):
    anns = [
        box(1, 1, [50, 40, 30, 30]),          # partly outside (64x48): clipped to [50, 40, 64, 48]
        box(1, 1, [60.5, 10, 4, 4]),          # 0.5 px outside: clipped silently
        box(2, 1, [10, 10, 0, 5]),            # zero width: dropped
        box(2, 1, [10, 10, -3, 5]),           # negative width: dropped
        box(2, 1, [100, 100, 5, 5]),          # entirely outside: dropped
        box(3, 7, [1, 1, 5, 5]),              # unknown category: dropped
        box(3, 1, [1, 1, 5]),                 # malformed bbox: dropped
        box(99, 1, [1, 1, 5, 5]),             # unknown image: dropped
    ]
    write_coco(tmp_path, "train", IMAGES, anns, [(1, "cat")])
    ds, message = load_with_warning(tmp_path)
    assert ds.records[0].boxes.tolist() == [[50, 40, 64, 48], [60.5, 10, 64, 14]]
    assert [len(r.boxes) for r in ds.records] == [2, 0, 0]
    lines = message.splitlines()
    assert "instances_train.json" in lines[0] and "7 annotation problems" in lines[0] and "'train'" in lines[0]
    assert "1 box partly outside the image, clipped (1 file: a.png)" in message
    assert "2 boxes with zero or negative size, dropped (1 file: b.png)" in message
    assert "1 box entirely outside the image, dropped (1 file: b.png)" in message
    assert "1 box with an unknown category, dropped (1 file: c.png)" in message
    assert "2 malformed annotations, dropped (2 files: c.png, annotations of no listed image)" in message
    assert len(lines) == 6


def test_missing_images_are_dropped_and_named(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [box(2, 1, [1, 1, 5, 5])], [(1, "cat")])
    (tmp_path / "train/b.png").unlink()
    ds, message = load_with_warning(tmp_path)
    assert [r.file_name for r in ds.records] == ["a.png", "c.png"]
    assert "1 missing image file, image dropped (1 file: b.png)" in message


def test_file_lists_are_shortened(tmp_path):
    images = [(i, f"{i}.png", 20, 20) for i in range(1, 7)]
    write_coco(tmp_path, "train", images, [box(i, 1, [15, 15, 10, 10]) for i in range(1, 7)], [(1, "cat")])
    _, message = load_with_warning(tmp_path)
    assert "6 boxes partly outside the image, clipped (6 files: 1.png, 2.png, 3.png, ...)" in message


def test_duplicate_and_malformed_image_entries_are_dropped(tmp_path):
    path = write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")])
    data = json.loads(path.read_text())
    data["images"] += [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"file_name": "x.png"}]
    path.write_text(json.dumps(data))
    ds, message = load_with_warning(tmp_path)
    assert len(ds) == 3
    assert "1 duplicate image entry, dropped (1 file: a.png)" in message
    assert "1 malformed annotation, dropped (1 file: x.png)" in message


def test_missing_sizes_are_read_from_the_image(tmp_path):
    path = write_coco(tmp_path, "train", IMAGES, [box(3, 1, [1, 1, 5, 5])], [(1, "cat")])
    data = json.loads(path.read_text())
    del data["images"][2]["width"]
    path.write_text(json.dumps(data))
    ds = load_quietly(tmp_path)
    assert (ds.records[2].width, ds.records[2].height) == (32, 32)


def test_an_image_of_another_size_than_annotated_fails_in_one_line(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")])
    write_image(tmp_path / "train/a.png", 10, 10)
    ds = load_quietly(tmp_path)
    with pytest.raises(DatasetError, match=r"a\.png: image is 10x10 pixels but its annotations say 64x48$"):
        ds[0]


def test_a_corrupt_image_fails_in_one_line_when_read(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")])
    (tmp_path / "train/b.png").write_bytes(b"not a png")
    ds = load_quietly(tmp_path)
    with pytest.raises(DatasetError, match=r"b\.png: cannot read image") as e:
        ds[1]
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- unfixable problems


def one_line_error(path, match, split="train"):
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(path, split)
    assert "\n" not in str(e.value) and e.value.__cause__ is None
    return str(e.value)


def test_invalid_json(tmp_path):
    path = write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")])
    path.write_text('{"images": [}')
    assert one_line_error(tmp_path, "invalid JSON").startswith(str(path))
    assert one_line_error(path, r"instances_train\.json: invalid JSON: .* \(line 1, column 13\)")


@pytest.mark.parametrize("content, match", [
    ([1, 2], "not a COCO detection file"), ({"images": []}, "not a COCO detection file"),
    ({"images": [], "annotations": [], "categories": [{"id": 1}]}, "lists no images"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []}, "no categories"),
    ({"images": [], "annotations": [], "categories": [{"name": "x"}]}, "malformed category"),
    ({"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 1}]}, "duplicate category ids"),
])
def test_files_that_are_not_coco(tmp_path, content, match):
    path = tmp_path / "annotations/instances_train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(content))
    assert one_line_error(path, match).startswith(str(path))


def test_missing_split_names_the_folder_and_the_splits_found(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")])
    message = one_line_error(tmp_path, "no COCO annotation file for split 'val'", split="val")
    assert str(tmp_path) in message and "splits found: train" in message


def test_no_image_found_anywhere(tmp_path):
    write_coco(tmp_path, "train", IMAGES, [], [(1, "cat")], write_images=False)
    (tmp_path / "train").mkdir()
    one_line_error(tmp_path, r"instances_train\.json: none of its images found \(e\.g\. 'a\.png'\) under")


def test_every_image_missing_but_the_folder_found(tmp_path):
    write_coco(tmp_path, "train", IMAGES[:1], [], [(1, "cat")])
    with pytest.raises(DatasetError, match="none of its 1 images could be read from .*nowhere$"):
        load_coco(tmp_path / "annotations/instances_train.json", images_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- layouts


def test_coco_2017_layout_with_images_folder(tmp_path):
    write_coco(tmp_path / "tmp", "x", IMAGES, [box(1, 1, [1, 1, 5, 5])], [(1, "cat")])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "tmp/annotations/instances_x.json").rename(tmp_path / "annotations/instances_val2017.json")
    (tmp_path / "annotations/captions_val2017.json").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "tmp/x").rename(tmp_path / "images/val2017")
    ds = load_quietly(tmp_path, "val")
    assert len(ds) == 3 and ds.split == "val"
    assert ds.records[0].path == tmp_path / "images/val2017/a.png"
    assert list_splits(tmp_path) == ["val"]


def roboflow(root, splits=("train", "valid", "test")):
    """Roboflow's COCO export: <split>/_annotations.coco.json, the project as category 0."""
    for split in splits:
        for _, name, w, h in IMAGES:
            write_image(root / split / name, w, h)
        data = {"images": [{"id": i - 1, "file_name": n, "width": w, "height": h} for i, n, w, h in IMAGES],
                "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "bbox": [1, 1, 9, 9], "area": 81,
                                 "iscrowd": 0, "segmentation": []}],
                "categories": [{"id": 0, "name": "shapes-xyz", "supercategory": "none"},
                               {"id": 1, "name": "circle", "supercategory": "shapes-xyz"},
                               {"id": 2, "name": "square", "supercategory": "shapes-xyz"}]}
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def test_roboflow_layout(tmp_path):
    root = roboflow(tmp_path)
    assert detect_format(root) == "coco"
    assert list_splits(root) == ["test", "train", "val"]
    ds = load_quietly(root, "val")
    assert ds.split == "val" and ds.records[0].path == root / "valid/a.png"
    assert ds.class_names == ["circle", "square"] and ds.category_ids == [1, 2]  # project entry left out
    assert ds[0][1]["labels"].tolist() == [1]
    assert ds[0][1]["image_id"] == 0
    one_split = load_quietly(root / "test")
    assert one_split.split == "test" and len(one_split) == 3
    assert detect_format(root / "test") == "coco"


def test_real_coco_supercategories_are_not_mistaken_for_roboflow_projects(tmp_path):
    path = write_coco(tmp_path, "train", IMAGES, [box(1, 2, [1, 1, 5, 5])], [])
    data = json.loads(path.read_text())
    data["categories"] = [{"id": 1, "name": "person", "supercategory": "person"},
                          {"id": 2, "name": "bicycle", "supercategory": "vehicle"}]
    path.write_text(json.dumps(data))
    assert load_quietly(tmp_path).class_names == ["person", "bicycle"]


# ---------------------------------------------------------------- image decoding


def test_image_modes_and_exif_orientation(tmp_path):
    from PIL import Image

    folder = tmp_path / "train"
    folder.mkdir()
    Image.new("L", (8, 6), 77).save(folder / "gray.png")
    Image.new("RGBA", (8, 6), (10, 20, 30, 0)).save(folder / "rgba.png")
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(folder / "deep.png")
    Image.new("P", (8, 6), 3).save(folder / "palette.png")
    Image.new("CMYK", (8, 6), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
    rotated = Image.new("RGB", (8, 6), (200, 0, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 6 wide, 8 high
    rotated.save(folder / "rotated.jpg", exif=exif)
    rotated.save(folder / "rotated_raw.jpg", exif=exif)
    images = [(1, "gray.png", 8, 6), (2, "rgba.png", 8, 6), (3, "deep.png", 8, 6), (4, "palette.png", 8, 6),
              (5, "cmyk.jpg", 8, 6), (6, "rotated.jpg", 6, 8), (7, "rotated_raw.jpg", 8, 6)]
    write_coco(tmp_path, "train", images, [], [(1, "x")], write_images=False)
    ds = load_quietly(tmp_path)
    pixels = [ds[i][0] for i in range(len(ds))]
    assert all(p.dtype == torch.uint8 and p.shape[0] == 3 for p in pixels)
    assert pixels[0][:, 0, 0].tolist() == [77, 77, 77]
    assert pixels[1][:, 0, 0].tolist() == [10, 20, 30]
    assert pixels[2][:, 0, 0].tolist() == [255, 255, 255]  # 16-bit white stays white
    assert pixels[4][:, 0, 0].tolist() == [255, 255, 255]
    assert pixels[5].shape == (3, 8, 6)  # EXIF orientation applied: matches the annotated size
    assert pixels[6].shape == (3, 6, 8)  # annotated on the raw pixels: raw pixels used
    assert pixels[5][0].float().mean() > 150


def test_datasets_pickle_and_batch_in_a_data_loader(tmp_path):
    import pickle

    write_coco(tmp_path, "train", IMAGES[:2], [box(1, 1, [10, 5, 20, 10])], [(1, "cat")])
    ds = pickle.loads(pickle.dumps(load_quietly(tmp_path)))  # what DataLoader workers receive
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=lambda batch: tuple(zip(*batch)))
    images, targets = next(iter(loader))
    assert [t["labels"].tolist() for t in targets] == [[0], []]
    assert "2 images, 1 boxes, 1 classes" in repr(ds)
