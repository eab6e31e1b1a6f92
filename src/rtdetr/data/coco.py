"""COCO json data sets: a json file, a COCO folder, or Roboflow's COCO export.

Layouts (`split` picks the annotation file; `val` also matches `valid`/`validation`, and a
year suffix is ignored):

    instances_val2017.json            a file: the images are looked for next to it, in
                                      <root>/<val2017|val>/, <root>/images/..., <root>/
    root/annotations/instances_train2017.json + root/train2017/*.jpg   (or root/images/train2017)
    root/train/_annotations.coco.json + root/train/*.jpg               (Roboflow; also valid/, test/)

Boxes are `bbox: [x, y, w, h]` in pixels. Crowd boxes (`iscrowd: 1`) are kept for evaluation
only. Roboflow exports list the project itself as an extra category (id 0, no boxes, the
`supercategory` of every real class): such a category is left out.

With masks=True each annotation's `segmentation` is kept too: polygons `[[x, y, ...], ...]` in
pixels, or RLE `{"size": [h, w], "counts": str | list}` (compressed or not). One missing (or an
empty list, as box-only exports write) or malformed is counted; its box is its mask.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

from rtdetr.data.dataset import DetectionDataset, ImageRecord, make_record
from rtdetr.data.images import READ_ERRORS, image_size
from rtdetr.data.problems import DatasetError, Problems
from rtdetr.data.splits import canonical_split, split_names, split_of

ROBOFLOW_FILE = "_annotations.coco.json"
PROBE_IMAGES = 20  # images tried per candidate folder when looking for the images


# ---------------------------------------------------------------- finding the files


def coco_json_files(root: Path) -> dict[str, Path]:
    """split -> annotation file, for a COCO or Roboflow folder."""
    found: dict[str, Path] = {}
    if (root / ROBOFLOW_FILE).is_file():
        found[split_of(root.name) or "train"] = root / ROBOFLOW_FILE
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / ROBOFLOW_FILE).is_file() and split_of(sub.name):
            found.setdefault(split_of(sub.name), sub / ROBOFLOW_FILE)
    annotations = root / "annotations"
    if annotations.is_dir():
        by_split = defaultdict(list)
        for p in sorted(annotations.glob("*.json")):
            if split_of(p.stem):
                by_split[split_of(p.stem)].append(p)
        for split, paths in by_split.items():
            instances = [p for p in paths if p.stem.startswith("instances")]
            found.setdefault(split, (instances or paths)[0])
    return found


def find_coco_json(path: Path, split: str) -> Path:
    """The annotation file of `split` for a json file (returned as is) or a folder."""
    if path.is_file():
        return path
    if (path / ROBOFLOW_FILE).is_file():  # a Roboflow split folder itself
        return path / ROBOFLOW_FILE
    files = coco_json_files(path)
    split = canonical_split(split)
    if split not in files:
        have = ", ".join(sorted(files)) or "none"
        raise DatasetError(f"{path}: no COCO annotation file for split {split!r} "
                           f"(splits found: {have}; looked for annotations/*{split}*.json and "
                           f"{'|'.join(split_names(split))}/{ROBOFLOW_FILE})")
    return files[split]


def read_coco_json(path: Path) -> dict:
    """Parse a COCO json file, checking its top-level structure; one-line errors."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO detection file (no 'images' list)")
    if not isinstance(data.get("annotations", []), list) or not isinstance(data.get("categories"), list):
        raise DatasetError(f"{path}: not a COCO detection file (no 'categories' or 'annotations' list)")
    return data


def find_images_dir(json_path: Path, file_names: list[str], split: str) -> Path:
    """The folder the json's `file_name`s are relative to: the candidate holding most of a sample."""
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    token = next((t for t in json_path.stem.split("_") if split_of(t)), split)  # e.g. "train2017"
    names = [token, *split_names(split)]
    candidates = [json_path.parent, *(root / n for n in names), *(root / "images" / n for n in names),
                  root / "images", root]
    candidates = list(dict.fromkeys(c for c in candidates if c.is_dir()))
    sample = file_names[:PROBE_IMAGES]
    hits = [sum((c / f).is_file() for f in sample) for c in candidates]
    if not hits or max(hits) == 0:
        shown = ", ".join(str(c) for c in candidates) or str(root)
        raise DatasetError(f"{json_path}: none of its images found (e.g. {sample[0]!r}) under {shown}")
    return candidates[hits.index(max(hits))]


# ---------------------------------------------------------------- parsing


def parse_categories(data: dict, json_path: Path) -> list[tuple[int, str]]:
    """(id, name) pairs; Roboflow's project entry (no boxes, supercategory of the others) left out."""
    categories = []
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise DatasetError(f"{json_path}: malformed category entry {str(c)[:80]}")
        categories.append((c["id"], str(c.get("name", c["id"])), str(c.get("supercategory", ""))))
    ids = [cid for cid, _, _ in categories]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{json_path}: duplicate category ids in 'categories'")
    used = {a["category_id"] for a in data.get("annotations", [])
            if isinstance(a, dict) and isinstance(a.get("category_id"), int)}
    parents = {(sup, cid) for cid, _, sup in categories}
    kept = [(cid, name) for cid, name, _ in categories
            if cid in used or not any(sup == name and other != cid for sup, other in parents)]
    if not kept:
        raise DatasetError(f"{json_path}: no categories")
    return kept


def group_annotations(data: dict, problems: Problems, names: dict[int, str]) -> dict[int, list[dict]]:
    """image id -> its well-formed annotations; malformed ones counted and dropped."""
    by_image = defaultdict(list)
    for a in data.get("annotations", []):
        a = a if isinstance(a, dict) else {}
        image_id = a.get("image_id") if isinstance(a.get("image_id"), int) else None
        bbox = a.get("bbox")
        ok = (image_id in names and isinstance(a.get("category_id"), int)
              and isinstance(bbox, list) and len(bbox) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox))
        if ok:
            by_image[image_id].append(a)
        else:
            problems.add("malformed", names.get(image_id, "annotations of no listed image"))
    return by_image


def parse_images(data: dict, problems: Problems) -> list[dict]:
    """The well-formed, unique image entries; the others counted and dropped."""
    images, seen = [], set()
    for im in data["images"]:
        if not (isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)):
            problems.add("malformed", str(im.get("file_name", "?")) if isinstance(im, dict) else "?")
        elif im["id"] in seen:
            problems.add("duplicate_image", im["file_name"])
        else:
            seen.add(im["id"])
            images.append(im)
    return images


def image_record(im: dict, anns: list[dict], images_dir: Path, known_ids: set[int],
                 problems: Problems, masks: bool = False) -> ImageRecord | None:
    """One image entry and its annotations -> ImageRecord (None if its file is missing or unreadable);
    masks: keep the annotations' segmentations."""
    path, name = images_dir / im["file_name"], im["file_name"]
    if not path.is_file():
        problems.add("missing_image", name)
        return None
    width, height = im.get("width"), im.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        try:
            width, height = image_size(path)
        except READ_ERRORS:
            problems.add("unreadable_image", name)
            return None
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    return make_record(path, name, im["id"], width, height, boxes, [a["category_id"] for a in anns],
                       known_ids=known_ids, problems=problems, file=name,
                       iscrowd=[bool(a.get("iscrowd", 0)) for a in anns],
                       areas=[a["area"] if isinstance(a.get("area"), (int, float)) else float("nan") for a in anns],
                       segmentations=[a.get("segmentation") for a in anns] if masks else None)


# ---------------------------------------------------------------- the reader


def load_coco(path: str | Path, split: str = "train", transforms: Callable | None = None,
              images_dir: str | Path | None = None, masks: bool = False) -> DetectionDataset:
    """Read a COCO json file or folder (see the module docstring) as a DetectionDataset.

    images_dir: the folder `file_name`s are relative to, when it cannot be guessed.
    masks: targets carry instance masks from the annotations' segmentations.
    Fixable problems are reported in one DatasetWarning; the others raise DatasetError.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    json_path = find_coco_json(path, split)
    split = split_of(json_path.stem) or split_of(json_path.parent.name) or canonical_split(split)
    data = read_coco_json(json_path)
    problems = Problems(json_path, split)
    categories = parse_categories(data, json_path)
    images = parse_images(data, problems)
    if not images:
        raise DatasetError(f"{json_path}: lists no images")
    images_dir = Path(images_dir) if images_dir else find_images_dir(
        json_path, [im["file_name"] for im in images], split)
    by_image = group_annotations(data, problems, {im["id"]: im["file_name"] for im in images})
    known_ids = {cid for cid, _ in categories}
    records = [image_record(im, by_image.get(im["id"], []), images_dir, known_ids, problems, masks)
               for im in images]
    records = [r for r in records if r is not None]
    if not records:
        raise DatasetError(f"{json_path}: none of its {len(images)} images could be read from {images_dir}")
    problems.report()
    return DetectionDataset(records, categories, transforms, split, str(json_path), masks=masks)
