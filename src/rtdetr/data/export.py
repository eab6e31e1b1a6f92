"""Writing a data set in COCO, YOLO txt or Pascal VOC layout (images copied as they are).

`source` is a DetectionDataset (one split, named by its `split`), a list of them (one per
split, same classes), or a data set path, of which `splits` (default: all it has) are read
(with `masks=True`: read with their masks, see `load_dataset`).

What each layout keeps:
  COCO  everything: boxes, original category ids, crowd boxes (`iscrowd: 1`), areas, and the
        segmentations of a data set read with masks (polygons in pixels, RLE with str counts).
  YOLO  boxes and contiguous labels 0..K-1 as class indices, class names in data.yaml; crowd
        boxes are left out (YOLO has no "ignore" flag); original category ids are lost. With
        masks, an object whose segmentation is one polygon is written as a YOLO-seg polygon line
        (read back, its box is the polygon's extent); the others (RLE, several polygons, none)
        as box lines.
  VOC   boxes rounded to whole pixels, class names (classes.txt, in label order); crowd boxes
        become `difficult`; category ids become 1..K.
"""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import yaml

from rtdetr.data.dataset import DetectionDataset, ImageRecord
from rtdetr.data.detect import list_splits, load_dataset
from rtdetr.data.problems import DatasetError


def _datasets(source, splits: list[str] | None, masks: bool = False) -> list[DetectionDataset]:
    """The split data sets to export, checked to share their classes."""
    if isinstance(source, DetectionDataset):
        datasets = [source]
    elif isinstance(source, (list, tuple)):
        datasets = list(source)
    else:
        datasets = [load_dataset(source, split, masks=masks) for split in (splits or list_splits(source))]
    names = [ds.class_names for ds in datasets]
    if any(n != names[0] for n in names):
        raise DatasetError(f"cannot export splits with different classes: {names}")
    if len({ds.split for ds in datasets}) != len(datasets):
        raise DatasetError(f"cannot export two data sets of the same split: {[ds.split for ds in datasets]}")
    return datasets


def _safe_name(record: ImageRecord) -> str:
    """The record's file name relative to its split folder (its bare name if it leaves the folder)."""
    name = PurePosixPath(record.file_name.replace("\\", "/"))
    return record.path.name if name.is_absolute() or ".." in name.parts else str(name)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# ---------------------------------------------------------------- COCO


def export_coco(source, out: str | Path, splits: list[str] | None = None, masks: bool = False) -> Path:
    """Write out/annotations/instances_<split>.json and out/<split>/<images>; returns `out`."""
    out = Path(out)
    for ds in _datasets(source, splits, masks):
        coco = ds.to_coco()
        for image, record in zip(coco["images"], ds.records):
            image["file_name"] = _safe_name(record)
            _copy(record.path, out / ds.split / image["file_name"])
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{ds.split}.json").write_text(json.dumps(coco, indent=1) + "\n")
    return out


# ---------------------------------------------------------------- YOLO


def yolo_lines(ds: DetectionDataset, record: ImageRecord) -> list[str]:
    """`label cx cy w h` lines (normalised) of a record's non-crowd boxes; `label x1 y1 x2 y2 ...`
    (normalised) for an object whose segmentation is one polygon."""
    keep = ~record.iscrowd
    boxes, labels = record.boxes[keep], ds.labels_of(record.category_ids[keep])
    segmentations = record.segmentations or [None] * len(record.boxes)
    segmentations = [s for s, k in zip(segmentations, keep.tolist()) if k]
    lines = []
    for (x1, y1, x2, y2), label, seg in zip(boxes, labels, segmentations):
        if isinstance(seg, list) and len(seg) == 1:
            xy = seg[0].reshape(-1, 2) / (record.width, record.height)
            lines.append(f"{label} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
            continue
        cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
        w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
        lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def export_yolo(source, out: str | Path, splits: list[str] | None = None, masks: bool = False) -> Path:
    """Write out/data.yaml, out/images/<split>/..., out/labels/<split>/*.txt; returns `out`."""
    out = Path(out)
    datasets = _datasets(source, splits, masks)
    for ds in datasets:
        for record in ds.records:
            name = _safe_name(record)
            _copy(record.path, out / "images" / ds.split / name)
            label = (out / "labels" / ds.split / name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            lines = yolo_lines(ds, record)
            label.write_text("".join(line + "\n" for line in lines))
    data = {ds.split: f"images/{ds.split}" for ds in datasets}
    data |= {"nc": datasets[0].num_classes, "names": list(datasets[0].class_names)}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return out


# ---------------------------------------------------------------- VOC


def voc_xml(ds: DetectionDataset, record: ImageRecord, file_name: str) -> ET.ElementTree:
    """The VOC annotation of a record: 1-based inclusive integer pixel boxes, crowd -> difficult."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    labels = ds.labels_of(record.category_ids)
    for (x1, y1, x2, y2), label, crowd in zip(record.boxes, labels, record.iscrowd):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = ds.class_names[label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(crowd))
        xmin, ymin = int(round(x1)) + 1, int(round(y1)) + 1
        xmax, ymax = max(int(round(x2)), xmin), max(int(round(y2)), ymin)
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def export_voc(source, out: str | Path, splits: list[str] | None = None) -> Path:
    """Write out/Annotations, out/JPEGImages, out/ImageSets/Main/<split>.txt, out/classes.txt.

    Image ids are the file names without suffix (folders joined by `_`), prefixed by the split
    when two splits hold different images of the same name. Returns `out`.
    """
    out = Path(out)
    datasets = _datasets(source, splits)
    used: dict[str, Path] = {}  # image id -> its source image
    for ds in datasets:
        ids = []
        for record in ds.records:
            image_id = str(PurePosixPath(_safe_name(record)).with_suffix("")).replace("/", "_")
            if used.get(image_id, record.path) != record.path:
                image_id = f"{ds.split}_{image_id}"
            used[image_id] = record.path
            file_name = image_id + record.path.suffix
            _copy(record.path, out / "JPEGImages" / file_name)
            (out / "Annotations").mkdir(parents=True, exist_ok=True)
            voc_xml(ds, record, file_name).write(out / "Annotations" / f"{image_id}.xml", encoding="unicode")
            ids.append(image_id)
        (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (out / "ImageSets" / "Main" / f"{ds.split}.txt").write_text("".join(i + "\n" for i in ids))
    (out / "classes.txt").write_text("".join(name + "\n" for name in datasets[0].class_names))
    return out
