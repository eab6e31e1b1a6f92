"""What prediction gives back for one picture: `Result`, with its boxes in several formats (and,
for segmentation models, its instance masks: `Masks`).

All boxes are in the pixels of the *original* picture (as read, EXIF rotation applied), not
of the network input. Box formats, for N boxes (each a float tensor [N, 4]):

    xyxy    x1, y1, x2, y2            pixels (corners)
    xywh    cx, cy, w, h              pixels (centre, width, height: Ultralytics' meaning)
    ltwh    x1, y1, w, h              pixels (top-left, width, height: COCO's "bbox")
    xyxyn, xywhn                      the same divided by the picture's width and height

Boxes are the detector's own and are not clipped to the picture (as the official code).

Masks (segmentation models only; `Result.masks` is None for detection models), one per box,
in the same pixels:

    data      bool [N, H, W]            the picture's pixels each mask covers
    rle       N COCO RLE dicts          {"size": [H, W], "counts": str} (COCO's "segmentation")
    polygons  N lists of polygons       [[x0, y0, x1, y1, ...], ...] outer contours (needs OpenCV)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rtdetr.core.masks import decode_rle, encode_rle, mask_to_polygons


def xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    """[N, 4] corners -> centre, width, height."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """[N, 4] centre, width, height -> corners."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_ltwh(b: torch.Tensor) -> torch.Tensor:
    """[N, 4] corners -> top-left, width, height (COCO)."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], -1)


def normalise(b: torch.Tensor, orig_shape: tuple[int, int]) -> torch.Tensor:
    """[N, 4] pixel boxes (x, y, x, y or x, y, w, h) divided by width and height of `orig_shape` (h, w)."""
    h, w = orig_shape
    return b / b.new_tensor([w, h, w, h])


def denormalise(b: torch.Tensor, orig_shape: tuple[int, int]) -> torch.Tensor:
    """The inverse of `normalise`."""
    h, w = orig_shape
    return b * b.new_tensor([w, h, w, h])


class Boxes:
    """N boxes of one picture of size `orig_shape` (h, w); see the module docstring for the formats."""

    def __init__(self, xyxy: torch.Tensor, orig_shape: tuple[int, int]):
        self.xyxy = xyxy.reshape(-1, 4).float()
        self.orig_shape = tuple(orig_shape)

    @classmethod
    def from_xywh(cls, xywh: torch.Tensor, orig_shape: tuple[int, int]) -> Boxes:
        return cls(xywh_to_xyxy(xywh), orig_shape)

    @classmethod
    def from_xyxyn(cls, xyxyn: torch.Tensor, orig_shape: tuple[int, int]) -> Boxes:
        return cls(denormalise(xyxyn, orig_shape), orig_shape)

    @classmethod
    def from_xywhn(cls, xywhn: torch.Tensor, orig_shape: tuple[int, int]) -> Boxes:
        return cls.from_xywh(denormalise(xywhn, orig_shape), orig_shape)

    @property
    def xywh(self) -> torch.Tensor:
        return xyxy_to_xywh(self.xyxy)

    @property
    def ltwh(self) -> torch.Tensor:
        return xyxy_to_ltwh(self.xyxy)

    @property
    def xyxyn(self) -> torch.Tensor:
        return normalise(self.xyxy, self.orig_shape)

    @property
    def xywhn(self) -> torch.Tensor:
        return normalise(self.xywh, self.orig_shape)

    def __len__(self) -> int:
        return self.xyxy.shape[0]

    def __repr__(self) -> str:
        return f"Boxes(xyxy={self.xyxy.tolist()}, orig_shape={self.orig_shape})"


class Masks:
    """N instance masks of one picture of size `orig_shape` (h, w), in its own pixels.

    data: bool [N, H, W] (a CPU tensor); see the module docstring for `rle` and `polygons`.
    """

    def __init__(self, data: torch.Tensor | np.ndarray, orig_shape: tuple[int, int] | None = None):
        data = torch.as_tensor(data).to("cpu", torch.bool)
        if data.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {list(data.shape)}")
        self.data = data
        self.orig_shape = tuple(int(v) for v in (orig_shape if orig_shape is not None else data.shape[1:]))
        if tuple(data.shape[1:]) != self.orig_shape:
            raise ValueError(f"masks of {data.shape[1]}x{data.shape[2]} for a picture of "
                             f"{self.orig_shape[0]}x{self.orig_shape[1]} (h x w)")
        self._rle: list[dict] | None = None

    @classmethod
    def from_rle(cls, rles: list[dict], orig_shape: tuple[int, int]) -> Masks:
        """From COCO RLE dicts (compressed or not) of the picture's size."""
        if not rles:
            return cls(torch.zeros((0, *orig_shape), dtype=torch.bool), orig_shape)
        return cls(torch.from_numpy(decode_rle(list(rles))), orig_shape)

    @property
    def rle(self) -> list[dict]:
        """COCO compressed RLE per mask, `counts` as str (JSON-ready); computed once."""
        if self._rle is None:
            self._rle = encode_rle(self.data.numpy()) if len(self) else []
        return self._rle

    @property
    def polygons(self) -> list[list[list[float]]]:
        """Per mask its outer contours as COCO polygons [[x0, y0, x1, y1, ...], ...] in pixels
        (holes are lost); needs OpenCV (an ImportError saying how to install it otherwise)."""
        return [mask_to_polygons(m) for m in self.data.numpy()]

    @property
    def area(self) -> torch.Tensor:
        """Pixels per mask: int64 [N]."""
        return self.data.flatten(1).sum(1)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        h, w = self.orig_shape
        return f"Masks({len(self)} mask{'' if len(self) == 1 else 's'} of {w}x{h})"


@dataclass
class Result:
    """The detections in one picture, best score first.

    boxes:  `Boxes` (.xyxy, .xywh, .ltwh, .xyxyn, .xywhn), pixels of the original picture
    scores: [N] float in [0, 1]
    labels: [N] int64, the model's 0-based class indices
    names:  {label: class name} for every class of the model
    orig_img: [H, W, 3] uint8 RGB, the picture as read (upright)
    path:   the file it came from (None for in-memory pictures); `frame`: frame number in a video
    category_ids: label -> data-set category id for `to_coco` (COCO's 1..90 for COCO models)
    speed:  milliseconds per picture for 'preprocess', 'inference', 'postprocess'
    masks:  `Masks` (.data bool [N, H, W], .rle, .polygons) of a segmentation model, one per box;
            None for detection models
    track_ids: int64 [N], each box's track id (1, 2, ...: one per object through a video) when the
            result comes from tracking (`rtdetr.predict.track`); None otherwise
    """

    boxes: Boxes
    scores: torch.Tensor
    labels: torch.Tensor
    names: dict[int, str]
    orig_img: np.ndarray
    path: str | None = None
    frame: int | None = None
    index: int = 0
    category_ids: list[int] | None = None
    speed: dict[str, float] = field(default_factory=dict)
    masks: Masks | None = None
    track_ids: torch.Tensor | None = None

    @property
    def orig_shape(self) -> tuple[int, int]:
        """(height, width) of the original picture."""
        return self.orig_img.shape[:2]

    @property
    def class_names(self) -> list[str]:
        """The class name of each box."""
        return [self.names[int(label)] for label in self.labels]

    @property
    def name(self) -> str:
        """A file name for this picture's annotated copy: the source's name, `video_000012.jpg` for a
        video frame, `image3.jpg` for an in-memory picture."""
        if self.path is None:
            return f"image{self.index}.jpg"
        p = Path(self.path)
        if self.frame is not None:
            return f"{p.stem}_{self.frame:06d}.jpg"
        return p.name if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else p.stem + ".png"

    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for n in self.class_names:
            counts[n] = counts.get(n, 0) + 1
        found = ", ".join(f"{c} {n}" for n, c in counts.items()) or "no detections"
        where = self.path or "image"
        if self.frame is not None:
            where += f" frame {self.frame}"
        h, w = self.orig_shape
        return f"Result({where}: {w}x{h}, {found})"

    def plot(self, labels: bool = True, scores: bool = True, line_width: int | None = None,
             masks: bool = True) -> np.ndarray:
        """The picture with its boxes drawn, over its masks (translucent fills in the class colour,
        when it has masks and masks=True): [H, W, 3] uint8 RGB (`PIL.Image.fromarray(...)` to view).
        A tracked result is drawn one colour per track, each label led by its id: "#3 person 0.91"."""
        from rtdetr.predict.draw import draw_detections, label_text
        texts = None
        if labels or scores:
            texts = [label_text(n, s, labels, scores) for n, s in zip(self.class_names, self.scores.tolist())]
        colour_keys = self.labels.tolist()
        if self.track_ids is not None:  # draw_detections colours by these keys: one colour per track
            colour_keys = self.track_ids.tolist()
            texts = [f"#{i} {t}".rstrip() for i, t in zip(colour_keys, texts or [""] * len(colour_keys))]
        fills = self.masks.data.numpy() if masks and self.masks is not None else None
        return draw_detections(self.orig_img, self.boxes.xyxy, colour_keys, texts, line_width, fills)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the annotated picture (`plot()`: boxes, and masks if any) to `path` (default:
        `<name>_pred.<ext>` here); returns the path."""
        from PIL import Image
        if path is None:
            p = Path(self.name)
            path = p.with_name(f"{p.stem}_pred{p.suffix}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
        return path

    def to_coco(self, image_id: int | str, category_ids: list[int] | None = None) -> list[dict]:
        """The detections in COCO results format: [{"image_id", "category_id", "bbox" [x, y, w, h], "score"}],
        with "segmentation" (compressed RLE, str counts) too when there are masks.

        category_ids maps labels to category ids (default: this result's own, e.g. COCO's 1..90;
        without any, the label itself).
        """
        ids = category_ids if category_ids is not None else self.category_ids
        coco = [{"image_id": image_id,
                 "category_id": int(ids[label]) if ids is not None else int(label),
                 "bbox": [round(float(v), 3) for v in box],
                 "score": round(float(score), 5)}
                for box, score, label in zip(self.boxes.ltwh.tolist(), self.scores.tolist(), self.labels.tolist())]
        if self.masks is not None:
            for d, rle in zip(coco, self.masks.rle, strict=True):
                d["segmentation"] = rle
        return coco

    def to_supervision(self):
        """These detections as Roboflow supervision's `sv.Detections` (needs `rtdetr[supervision]`), for
        its annotators, trackers, zones and metrics:

            xyxy        float32 [N, 4]     pixels of the original picture (as `boxes.xyxy`)
            confidence  float32 [N]        `scores`
            class_id    int64 [N]          `labels`, the model's 0-based classes
            data["class_name"]  str [N]    `class_names`
            mask        bool [N, H, W]     `masks.data`, when the result has masks
            tracker_id  int64 [N]          the track ids, when the result has them (tracking)
        """
        try:
            import supervision as sv
        except ImportError:
            raise ImportError("to_supervision needs supervision: pip install 'rtdetr[supervision]'") from None
        return sv.Detections(
            xyxy=self.boxes.xyxy.numpy().astype(np.float32).reshape(-1, 4),
            confidence=self.scores.numpy().astype(np.float32),
            class_id=self.labels.numpy().astype(np.int64),
            mask=self.masks.data.numpy() if self.masks is not None else None,
            tracker_id=np.asarray(self.track_ids, dtype=np.int64).reshape(-1) if self.track_ids is not None else None,
            data={"class_name": np.array(self.class_names, dtype=str).reshape(-1)},
        )
