"""Small builders of data set files for the data tests: images, COCO json, YOLO and VOC folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, width: int = 64, height: int = 48, colour=(120, 130, 140)) -> Path:
    """A plain RGB PNG (or JPEG, by suffix) of the given size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


def write_coco(root: Path, split: str, images: list[tuple], annotations: list[dict],
               categories: list[tuple[int, str]], write_images: bool = True) -> Path:
    """root/annotations/instances_<split>.json and root/<split>/<images>.

    images: (id, file_name, width, height); annotations: dicts with at least image_id,
    category_id, bbox (ids and iscrowd filled in); categories: (id, name).
    """
    if write_images:
        for _, name, w, h in images:
            write_image(root / split / name, w, h)
    anns = [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]
    data = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
            "annotations": anns, "categories": [{"id": c, "name": n} for c, n in categories]}
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_yolo(root: Path, names, labels: dict[str, str], sizes: dict[str, tuple[int, int]] | None = None,
               split: str = "train", extra_yaml: str = "") -> Path:
    """root/data.yaml, root/images/<split>/<stem>.png and root/labels/<split>/<stem>.txt.

    labels: image stem -> label file text (None: no label file); sizes: stem -> (w, h).
    """
    for stem, text in labels.items():
        w, h = (sizes or {}).get(stem, (100, 50))
        write_image(root / "images" / split / f"{stem}.png", w, h)
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"{split}: images/{split}\nnames: {json.dumps(names)}\n{extra_yaml}")
    return root


def voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """A VOC annotation; objects: (name, difficult, xmin, ymin, xmax, ymax)."""
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, d, x1, y1, x2, y2 in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>")


def write_voc(root: Path, splits: dict[str, dict[str, list[tuple]]], size=(80, 60),
              classes: list[str] | None = None) -> Path:
    """A VOC folder; splits: split -> {image id -> objects as in voc_xml}."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        for image_id, objects in images.items():
            write_image(root / "JPEGImages" / f"{image_id}.jpg", *size)
            (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", *size, objects))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def boxes_by_file(ds) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image file stem -> (training boxes [n, 4] sorted, labels [n]) of a DetectionDataset."""
    out = {}
    for i, record in enumerate(ds.records):
        target = ds.get_target(i)
        boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
        order = np.lexsort((boxes[:, 1], boxes[:, 0], labels))
        out[Path(record.file_name).stem] = (boxes[order], labels[order])
    return out
