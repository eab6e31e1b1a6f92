"""`load_dataset`: recognise a data set's format from its files and read one split.

    a .json file                                   -> COCO
    a .yaml / .yml file, or a folder with data.yaml -> YOLO
    a folder with Annotations/ (or one sub-folder with it, e.g. VOCdevkit/VOC2007) -> VOC
    a folder with annotations/*.json or <split>/_annotations.coco.json (Roboflow) -> COCO
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rtdetr.data.coco import ROBOFLOW_FILE, coco_json_files, load_coco
from rtdetr.data.dataset import DetectionDataset
from rtdetr.data.problems import DatasetError
from rtdetr.data.splits import canonical_split, split_of
from rtdetr.data.voc import find_voc_root, load_voc, voc_roots, voc_splits
from rtdetr.data.yolo import find_data_yaml, load_yolo, read_data_yaml

FORMATS = ("coco", "yolo", "voc")
LOADERS = {"coco": load_coco, "yolo": load_yolo, "voc": load_voc}


def _has_yaml(path: Path) -> bool:
    try:
        find_data_yaml(path)
        return True
    except DatasetError:
        return False


def detect_format(path: str | Path) -> str:
    """"coco", "yolo" or "voc" for a data set file or folder; DatasetError when none fits."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise DatasetError(f"{path}: not a data set file (expected a COCO .json or a YOLO data.yaml)")
    if _has_yaml(path):
        return "yolo"
    if (path / "Annotations").is_dir():
        return "voc"
    if (path / ROBOFLOW_FILE).is_file() or coco_json_files(path):
        return "coco"
    if voc_roots(path):  # e.g. VOCdevkit/VOC2007
        return "voc"
    raise DatasetError(f"{path}: no data set found (looked for COCO annotations/*.json or "
                       f"*/{ROBOFLOW_FILE}, YOLO data.yaml, VOC Annotations/)")


def load_dataset(path: str | Path, split: str = "train", transforms: Callable | None = None,
                 format: str | None = None, masks: bool = False) -> DetectionDataset:
    """Read one split of a COCO, YOLO or VOC data set, its format detected from its files.

    split: "train", "val" (also "valid"/"validation"), "test", or "trainval" (VOC); a json or
    yaml file given directly names its own split. transforms: `(image, target) -> (image, target)`,
    applied at the end of `__getitem__`. format: "coco", "yolo" or "voc" to skip detection.
    masks: every target also holds `masks` (tv_tensors.Mask uint8 [n, H, W], one per box) from
    the COCO segmentations or YOLO-seg polygons; a VOC data set raises DatasetError.
    """
    format = format or detect_format(path)
    if format not in LOADERS:
        raise ValueError(f"unknown data set format {format!r}; expected one of {', '.join(FORMATS)}")
    return LOADERS[format](path, split=split, transforms=transforms, masks=masks)


def list_splits(path: str | Path) -> list[str]:
    """The splits a data set has, canonical names (`train`, `val`, `test`, `trainval`), sorted."""
    path = Path(path)
    format = detect_format(path)
    if format == "coco":
        if path.is_file():
            return [split_of(path.stem) or "train"]
        if (path / ROBOFLOW_FILE).is_file():
            return [split_of(path.name) or "train"]
        return sorted(coco_json_files(path))
    if format == "yolo":
        data = read_data_yaml(find_data_yaml(path))
        return sorted({canonical_split(k) for k in data if split_of(k) and data[k]} & {"train", "val", "test"})
    return voc_splits(find_voc_root(path))
