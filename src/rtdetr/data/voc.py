"""Pascal VOC xml data sets.

    root/Annotations/<id>.xml            one per image: <filename>, <size>, <object>s with
                                         <name>, <difficult>, <bndbox> xmin ymin xmax ymax
    root/JPEGImages/<filename>           (or <id>.jpg, .png, ...)
    root/ImageSets/Main/<split>.txt      one image id per line: train, val, trainval, test
    root/classes.txt                     optional: class names, one a line, in label order

`root` may also be a folder holding exactly one such root (e.g. VOCdevkit/VOC2007). Without
ImageSets/Main every xml file belongs to the data set, whatever the split (with a warning).

Coordinates are VOC's 1-based pixel indices, inclusive: the box is (xmin - 1, ymin - 1, xmax,
ymax) in the library's continuous pixel coordinates, as Detectron2 reads them.

Classes: classes.txt (or labels.txt) when present; else the 20 VOC classes in their usual order
when every name is one of them; else the sorted names found in all of Annotations/. Category
ids are 1..K in that order. An object whose name is not a class is dropped (counted).

`difficult` objects are handled as COCO-style evaluation of VOC does (mmdetection's VOC -> COCO
conversion): left out of training targets and kept as `iscrowd: 1` in `to_coco()`, so that
detecting them is neither rewarded nor penalised, like the VOC metric's "ignore".
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

from rtdetr.data.dataset import DetectionDataset, ImageRecord, make_record
from rtdetr.data.images import IMAGE_SUFFIXES, READ_ERRORS, image_sizes
from rtdetr.data.problems import DatasetError, Problems, warn
from rtdetr.data.splits import canonical_split, split_names

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
CLASS_FILES = ("classes.txt", "labels.txt")


# ---------------------------------------------------------------- finding the files


def voc_roots(path: Path) -> list[Path]:
    """The folders holding Annotations/: `path` itself, else those up to two levels below it."""
    if (path / "Annotations").is_dir():
        return [path]
    return sorted(p.parent for p in [*path.glob("*/Annotations"), *path.glob("*/*/Annotations")] if p.is_dir())


def find_voc_root(path: Path) -> Path:
    """The folder holding Annotations/: `path` itself or its one sub-folder (two levels at most)."""
    found = voc_roots(path)
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(f"{path}: several VOC data sets inside ({', '.join(p.name for p in found)}); pass one")
    raise DatasetError(f"{path}: no VOC Annotations/ folder")


def split_ids(root: Path, split: str) -> list[str] | None:
    """The image ids listed for `split` in ImageSets/Main; None when there is no ImageSets/Main."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        return None
    for name in split_names(split):
        if (main / f"{name}.txt").is_file():
            lines = (main / f"{name}.txt").read_text().splitlines()
            return [line.split()[0] for line in lines if line.strip()]
    have = ", ".join(sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)) or "none"
    raise DatasetError(f"{main / (canonical_split(split) + '.txt')}: no such split file (splits found: {have})")


def voc_splits(root: Path) -> list[str]:
    """The splits ImageSets/Main lists (`train`, `val`, ...); ["train"] without ImageSets/Main."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        return ["train"]
    return sorted(canonical_split(p.stem) for p in main.glob("*.txt") if "_" not in p.stem)


# ---------------------------------------------------------------- parsing


def parse_xml(path: Path) -> dict | None:
    """An annotation file -> {filename, size: (w, h) | None, objects: [(name, difficult, box | None)]}.

    size is None when missing or zero; box is (xmin - 1, ymin - 1, xmax, ymax), None when the
    <bndbox> is missing or not numbers.
    Returns None when the file is missing or not well-formed xml.
    """
    try:
        tree = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    try:
        size = (int(float(tree.findtext("size/width"))), int(float(tree.findtext("size/height"))))
        size = size if min(size) > 0 else None  # some tools write 0 x 0
    except (TypeError, ValueError):
        size = None
    objects = []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip()
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        try:
            b = obj.find("bndbox")
            box = (float(b.findtext("xmin")) - 1, float(b.findtext("ymin")) - 1,
                   float(b.findtext("xmax")), float(b.findtext("ymax")))
        except (AttributeError, TypeError, ValueError):
            box = None
        objects.append((name, difficult, box))
    return {"filename": (tree.findtext("filename") or "").strip(), "size": size, "objects": objects}


def class_names(root: Path, parsed: dict[str, dict | None]) -> list[str]:
    """The class list: classes.txt, else the 20 VOC classes, else all names found (see module doc)."""
    for name in CLASS_FILES:
        if (root / name).is_file():
            names = [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
            if not names:
                raise DatasetError(f"{root / name}: no class names")
            return names
    found = set()
    for xml in sorted((root / "Annotations").glob("*.xml")):  # every split: the same classes for all
        p = parsed[xml.stem] if xml.stem in parsed else parse_xml(xml)
        found |= {obj[0] for obj in p["objects"] if obj[0]} if p else set()
    return list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)


def find_image(root: Path, image_id: str, filename: str) -> Path | None:
    """JPEGImages/<filename>, else JPEGImages/<id>.<any image suffix>; None when neither exists."""
    images = root / "JPEGImages"
    if filename and (images / filename).is_file():
        return images / filename
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (images / f"{image_id}{suffix}", images / f"{image_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def image_record(root: Path, image_id: str, index: int, ann: dict | None, category_of: dict[str, int],
                 problems: Problems) -> ImageRecord | None:
    """One image id and its parsed xml -> ImageRecord (None if either cannot be read)."""
    file = f"Annotations/{image_id}.xml"
    if ann is None:
        problems.add("unreadable_annotations", file)
        return None
    path = find_image(root, image_id, ann["filename"])
    if path is None:
        problems.add("missing_image", ann["filename"] or f"JPEGImages/{image_id}.jpg")
        return None
    try:
        raw, oriented = image_sizes(path)
    except READ_ERRORS:
        problems.add("unreadable_image", path.name)
        return None
    width, height = ann["size"] if ann["size"] in (raw, oriented) else oriented
    if ann["size"] is not None and ann["size"] not in (raw, oriented):
        problems.add("size_mismatch", file)
    objects = [obj for obj in ann["objects"] if obj[2] is not None]
    problems.add("malformed", file, len(ann["objects"]) - len(objects))
    return make_record(path, path.relative_to(root / "JPEGImages").as_posix(), index + 1, width, height,
                       [obj[2] for obj in objects], [category_of.get(obj[0], -1) for obj in objects],
                       known_ids=set(category_of.values()), problems=problems, file=file,
                       iscrowd=[obj[1] for obj in objects])


# ---------------------------------------------------------------- the reader


def load_voc(path: str | Path, split: str = "train", transforms: Callable | None = None,
             masks: bool = False) -> DetectionDataset:
    """Read a Pascal VOC data set (see the module docstring) as a DetectionDataset.

    masks: must be False: VOC xml files hold boxes only (DatasetError otherwise)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if masks:
        raise DatasetError(f"{path}: a VOC data set has no instance masks (boxes only); "
                           f"use COCO json or YOLO-seg labels for masks")
    root = find_voc_root(path)
    split = canonical_split(split)
    ids = split_ids(root, split)
    if ids is None:
        ids = [p.stem for p in sorted((root / "Annotations").glob("*.xml"))]
        warn(f"rtdetr: {root}: no ImageSets/Main split files: split {split!r} is all {len(ids)} annotation files")
    if not ids:
        raise DatasetError(f"{root}: no images in split {split!r}")
    parsed = {image_id: parse_xml(root / "Annotations" / f"{image_id}.xml") for image_id in ids}
    names = class_names(root, parsed)
    category_of = {name: i + 1 for i, name in enumerate(names)}  # category ids 1..K
    problems = Problems(root, split)
    records = [image_record(root, image_id, i, parsed[image_id], category_of, problems)
               for i, image_id in enumerate(ids)]
    records = [r for r in records if r is not None]
    if not records:
        raise DatasetError(f"{root}: none of the {len(ids)} images of split {split!r} could be read")
    problems.report()
    categories = [(cid, name) for name, cid in category_of.items()]
    return DetectionDataset(records, categories, transforms, split, str(root))
