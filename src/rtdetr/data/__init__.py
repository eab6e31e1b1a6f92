"""Detection data sets: COCO json, YOLO txt and Pascal VOC readers, the synthetic demo set, exports.

    from rtdetr.data import load_dataset, make_synthetic_dataset
    root = make_synthetic_dataset("demo")               # coloured shapes, COCO layout
    train = load_dataset(root, "train")                 # format detected from the files
    image, target = train[0]                            # uint8 [3, H, W]; boxes XYXY pixels, labels 0..K-1
    gt = train.to_coco()                                # COCO ground truth, original category ids
"""
from .coco import load_coco
from .dataset import DetectionDataset, ImageRecord
from .detect import detect_format, list_splits, load_dataset
from .export import export_coco, export_voc, export_yolo
from .images import read_image
from .problems import DatasetError, DatasetWarning
from .synthetic import make_synthetic_dataset
from .voc import load_voc
from .yolo import load_yolo

__all__ = [
    "DatasetError", "DatasetWarning", "DetectionDataset", "ImageRecord", "detect_format", "export_coco",
    "export_voc", "export_yolo", "list_splits", "load_coco", "load_dataset", "load_voc", "load_yolo",
    "make_synthetic_dataset", "read_image",
]
