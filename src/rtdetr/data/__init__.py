"""Detection data sets: COCO json, YOLO txt and Pascal VOC readers, the synthetic demo set, exports.

    from rtdetr.data import load_dataset, make_synthetic_dataset
    root = make_synthetic_dataset("demo")               # coloured shapes, COCO layout
    train = load_dataset(root, "train")                 # format detected from the files
    image, target = train[0]                            # uint8 [3, H, W]; boxes XYXY pixels, labels 0..K-1
    gt = train.to_coco()                                # COCO ground truth, original category ids
"""
from rtdetr.data.coco import load_coco
from rtdetr.data.dataset import DetectionDataset, ImageRecord
from rtdetr.data.detect import detect_format, list_splits, load_dataset
from rtdetr.data.export import export_coco, export_voc, export_yolo
from rtdetr.data.images import read_annotated_image
from rtdetr.data.problems import DatasetError, DatasetWarning
from rtdetr.data.synthetic import make_synthetic_dataset
from rtdetr.data.voc import load_voc
from rtdetr.data.yolo import load_yolo

__all__ = [
    "DatasetError", "DatasetWarning", "DetectionDataset", "ImageRecord", "detect_format", "export_coco",
    "export_voc", "export_yolo", "list_splits", "load_coco", "load_dataset", "load_voc", "load_yolo",
    "make_synthetic_dataset", "read_annotated_image",
]
