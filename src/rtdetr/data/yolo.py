"""YOLO txt data sets (Ultralytics / Roboflow "YOLOv5-v11" export) described by a data.yaml.

    data.yaml     path: <root>            optional; relative to the yaml's folder; default that folder
                  train: images/train     a folder of images, a .txt list of image paths, or a list
                  val: images/val         (also `valid`); Roboflow writes `../valid/images`, which
                  test: images/test       is also tried without its `../`, as Ultralytics does
                  names: [cat, dog]       or {0: cat, 1: dog}; the class indices are the category ids
    images/train/a.jpg  ->  labels/train/a.txt   (the last `images` folder becomes `labels`)

Each label line is `class cx cy w h`, normalised to the image size (0..1); a line of more than
5 numbers is a polygon `class x1 y1 x2 y2 ...` (YOLO-seg, at least 3 points) and becomes its
bounding box; with masks=True the polygon, in pixels, is also the object's segmentation (box
lines and polygon lines may be mixed; a box line's mask is its filled box, counted as no_mask).
An image without a label file, or with an empty one, is a negative. Image sizes are read from
the image headers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from rtdetr.data.dataset import DetectionDataset, ImageRecord, make_record
from rtdetr.data.images import READ_ERRORS, image_size, is_image_file
from rtdetr.data.problems import DatasetError, Problems
from rtdetr.data.splits import canonical_split, split_names

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


# ---------------------------------------------------------------- data.yaml


def find_data_yaml(path: Path) -> Path:
    """data.yaml itself, or the one in a folder (any single *.yaml with `names` will do)."""
    if path.is_file():
        return path
    for name in YAML_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
    with_names = [p for p in candidates if "names" in p.read_text(errors="replace")]
    if len(with_names) == 1:
        return with_names[0]
    raise DatasetError(f"{path}: no data.yaml")


def read_data_yaml(path: Path) -> dict:
    """Parse data.yaml; it must be a mapping with `names`."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        reason = getattr(e, "problem", None) or type(e).__name__
        raise DatasetError(f"{path}: invalid YAML{where}: {reason}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path}: not a YOLO data.yaml (no 'names')")
    return data


def parse_names(data: dict, yaml_path: Path) -> list[tuple[int, str]]:
    """`names` as (class index, name) pairs; a list gives indices 0..K-1, a dict its keys."""
    names = data["names"]
    try:
        if isinstance(names, list):
            pairs = [(i, str(n)) for i, n in enumerate(names)]
        elif isinstance(names, dict):
            pairs = [(int(k), str(v)) for k, v in names.items()]
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(f"{yaml_path}: 'names' must be a list or a dict of class index: name") from None
    if not pairs:
        raise DatasetError(f"{yaml_path}: 'names' is empty")
    if "nc" in data and data["nc"] != len(pairs):
        raise DatasetError(f"{yaml_path}: nc is {data['nc']} but 'names' has {len(pairs)} entries")
    return pairs


def split_sources(data: dict, split: str, yaml_path: Path) -> tuple[Path, list[Path]]:
    """(data set root, the image folders/lists of `split`), resolved as Ultralytics does."""
    root = yaml_path.parent / data["path"] if data.get("path") else yaml_path.parent
    key = next((k for k in split_names(split) if data.get(k)), None)
    if key is None:
        have = ", ".join(k for k in data if canonical_split(k) in ("train", "val", "test") and data[k])
        raise DatasetError(f"{yaml_path}: no {canonical_split(split)!r} entry (has: {have or 'none'})")
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    sources = []
    for entry in map(str, entries):
        source = root / entry
        if not source.exists() and entry.startswith("../"):
            source = root / entry[3:]
        if not source.exists():
            raise DatasetError(f"{root / entry}: no such folder or file (the {key!r} entry of {yaml_path})")
        sources.append(source)
    return root, sources


# ---------------------------------------------------------------- images and label files


def list_images(sources: list[Path]) -> list[tuple[Path, str]]:
    """(image path, name relative to its source folder) for every image, sorted per source."""
    images = []
    for source in sources:
        if source.is_dir():
            images += [(p, p.relative_to(source).as_posix())
                       for p in sorted(source.rglob("*")) if is_image_file(p) and p.is_file()]
        else:  # a .txt list, paths relative to the list's folder
            for line in source.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    path = source.parent / line
                    images.append((path, line))
    return images


def label_path(image: Path) -> Path:
    """.../images/x/a.jpg -> .../labels/x/a.txt (next to the image when no `images` folder)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_label_line(line: str) -> tuple[int, list[float], list[float] | None] | None:
    """`cls cx cy w h` (or a polygon) -> (class index, normalised XYXY, the normalised polygon
    [x1, y1, x2, y2, ...] or None for a box line); None when malformed."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        return None
    polygon = None
    if len(values) == 5:
        cls, cx, cy, w, h = values
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    elif len(values) >= 7 and len(values) % 2 == 1:
        cls, xs, ys, polygon = values[0], values[1::2], values[2::2], values[1:]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        return None
    if cls < 0 or cls != int(cls):
        return None
    return int(cls), box, polygon


def read_labels(path: Path, width: int, height: int, problems: Problems, file: str):
    """A label file -> (XYXY pixel boxes [n, 4], class indices [n], n segmentations: a polygon
    line's [[x1, y1, ...]] in pixels, None for a box line); None when unreadable."""
    if not path.is_file():
        return np.zeros((0, 4)), np.zeros(0, np.int64), []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        problems.add("unreadable_annotations", file)
        return None
    boxes, classes, polygons = [], [], []
    for line in lines:
        if not line.strip():
            continue
        parsed = parse_label_line(line)
        if parsed is None:
            problems.add("malformed", file)
            continue
        classes.append(parsed[0])
        boxes.append(parsed[1])
        polygons.append(parsed[2])
    scale = np.array([width, height, width, height], dtype=np.float64)
    # a polygon's (x, y) pairs times (width, height): pixels, as COCO's polygons
    segmentations = [None if p is None else [(np.reshape(p, (-1, 2)) * scale[:2]).reshape(-1).tolist()]
                     for p in polygons]
    return np.asarray(boxes, np.float64).reshape(-1, 4) * scale, np.asarray(classes, np.int64), segmentations


def image_record(image: Path, name: str, image_id: int, root: Path, known_ids: set[int],
                 problems: Problems, masks: bool = False) -> ImageRecord | None:
    """One image and its label file -> ImageRecord (None if either cannot be read); masks: keep
    the polygons as segmentations."""
    labels = label_path(image)
    file = labels.relative_to(root).as_posix() if labels.is_relative_to(root) else str(labels)
    if not image.is_file():
        problems.add("missing_image", name)
        return None
    try:
        width, height = image_size(image)
    except READ_ERRORS:
        problems.add("unreadable_image", name)
        return None
    parsed = read_labels(labels, width, height, problems, file)
    if parsed is None:
        return None
    boxes, classes, segmentations = parsed
    return make_record(image, name, image_id, width, height, boxes, classes,
                       known_ids=known_ids, problems=problems, file=file,
                       segmentations=segmentations if masks else None)


# ---------------------------------------------------------------- the reader


def load_yolo(path: str | Path, split: str = "train", transforms: Callable | None = None,
              masks: bool = False) -> DetectionDataset:
    """Read a YOLO data set (data.yaml or its folder; see the module docstring) as a DetectionDataset;
    masks: targets carry instance masks from the polygon lines (YOLO-seg)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    yaml_path = find_data_yaml(path)
    data = read_data_yaml(yaml_path)
    categories = parse_names(data, yaml_path)
    root, sources = split_sources(data, split, yaml_path)
    images = list_images(sources)
    if not images:
        raise DatasetError(f"{sources[0]}: no images")
    split = canonical_split(split)
    problems = Problems(yaml_path, split)
    known_ids = {cid for cid, _ in categories}
    records = [image_record(p, name, i + 1, root, known_ids, problems, masks)
               for i, (p, name) in enumerate(images)]
    records = [r for r in records if r is not None]
    if not records:
        raise DatasetError(f"{sources[0]}: none of its {len(images)} images could be read")
    problems.report()
    return DetectionDataset(records, categories, transforms, split, str(yaml_path), masks=masks)
