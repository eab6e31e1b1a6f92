"""What an evaluation returns: COCO's 12 summary numbers, per-class AP, and ways to print them.

A box evaluation's `EvalResult` may carry a second one, `segm`, with the same numbers for the
instance masks (when the model predicts masks and the ground truth has segmentations).

Every number is a float in [0, 1], or -1 where COCO leaves it undefined: no ground truth in that
class or area range (e.g. `ap_small` of a data set without small objects).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

# COCO's 12 summary numbers, in COCO's order: (field, AP or AR, IoU range, area range, maxDets).
SUMMARY: tuple[tuple[str, str, str, str, int], ...] = (
    ("ap", "AP", "0.50:0.95", "all", 100),
    ("ap50", "AP", "0.50", "all", 100),
    ("ap75", "AP", "0.75", "all", 100),
    ("ap_small", "AP", "0.50:0.95", "small", 100),
    ("ap_medium", "AP", "0.50:0.95", "medium", 100),
    ("ap_large", "AP", "0.50:0.95", "large", 100),
    ("ar1", "AR", "0.50:0.95", "all", 1),
    ("ar10", "AR", "0.50:0.95", "all", 10),
    ("ar100", "AR", "0.50:0.95", "all", 100),
    ("ar_small", "AR", "0.50:0.95", "small", 100),
    ("ar_medium", "AR", "0.50:0.95", "medium", 100),
    ("ar_large", "AR", "0.50:0.95", "large", 100),
)


@dataclass
class ClassAP:
    """One class's scores over the evaluated images (all areas, 100 detections per image).

    num_gt: its non-crowd ground-truth boxes; ap, ap50: AP50:95 and AP50, -1 when num_gt is 0.
    """

    category_id: int
    num_gt: int
    ap: float
    ap50: float


@dataclass
class EvalResult:
    """COCO box metrics (see `SUMMARY` for their definitions) and AP per class name.

    segm: the same metrics for the instance masks (COCO's iouType "segm"), or None when masks
    were not evaluated; e.g. `result.segm.ap` is the mask AP50:95.
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    per_class: dict[str, ClassAP] = field(default_factory=dict)
    num_images: int = 0
    segm: EvalResult | None = None

    @classmethod
    def from_stats(cls, stats: Sequence[float], per_class: dict[str, ClassAP],
                   num_images: int, segm: EvalResult | None = None) -> EvalResult:
        """From COCO's `COCOeval.stats` (its first 12 numbers, in `SUMMARY` order)."""
        values = [float(v) for v in stats[:len(SUMMARY)]]
        numbers = {name: v for (name, *_), v in zip(SUMMARY, values, strict=True)}
        return cls(**numbers, per_class=per_class, num_images=num_images, segm=segm)

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        """The inverse of `to_dict` (e.g. for the metrics saved in a checkpoint)."""
        per_class = {name: ClassAP(**c) for name, c in d.get("per_class", {}).items()}
        segm = cls.from_dict(d["segm"]) if d.get("segm") is not None else None
        return cls(**{name: float(d[name]) for name, *_ in SUMMARY}, per_class=per_class,
                   num_images=int(d.get("num_images", 0)), segm=segm)

    @property
    def empty(self) -> bool:
        """Whether there was nothing to score: the evaluated images hold no ground-truth object,
        so COCO leaves every number -1 ("undefined"), which is no measure of the model."""
        return self.ap < 0 and sum(c.num_gt for c in self.per_class.values()) == 0

    def nothing_to_score(self) -> str:
        """The line that stands for the numbers when `empty`."""
        return f"no objects in the {self.num_images} evaluated image{'s' if self.num_images != 1 else ''} to score"

    @property
    def stats(self) -> list[float]:
        """The 12 numbers in COCO's order (what the official code logs as `coco_eval_bbox`)."""
        return [getattr(self, name) for name, *_ in SUMMARY]

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready): the 12 numbers, num_images, per_class {name: ClassAP fields},
        and 'segm' (the mask metrics' own dict) only when masks were evaluated."""
        d = asdict(replace(self, segm=None))
        del d["segm"]
        if self.segm is not None:
            d["segm"] = self.segm.to_dict()
        return d

    def summary(self) -> str:
        """The 12 numbers as COCO prints them, one per line; with mask metrics, both blocks of
        12 under COCO's 'IoU metric: bbox' / 'IoU metric: segm' headings. With nothing to score
        (`empty`), one line saying so instead of twelve -1s."""
        if self.empty:
            return self.nothing_to_score() + " (AP and AR are undefined)"
        if self.segm is not None:
            return f"IoU metric: bbox\n{self._lines()}\nIoU metric: segm\n{self.segm._lines()}"
        return self._lines()

    def _lines(self) -> str:
        lines = []
        for name, kind, iou, area, max_dets in SUMMARY:
            title = "Average Precision  (AP)" if kind == "AP" else "Average Recall     (AR)"
            lines.append(f" {title} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] "
                         f"= {getattr(self, name):0.3f}")
        return "\n".join(lines)

    def table(self) -> str:
        """Per-class table: name, category id, ground-truth boxes, AP50:95, AP50; '-' where undefined.

        With mask metrics two more columns, maskAP and maskAP50, hold the masks' AP50:95 and
        AP50 of each class. The last row, 'all', holds the totals and COCO's AP and AP50 (the
        mean over the classes that have ground truth). With nothing to score (`empty`), a last line
        says so.
        """
        width = max([len("class"), len("all"), *(len(n) for n in self.per_class)])
        masks = self.segm.per_class if self.segm is not None else None
        head = f"{'class':<{width}} {'id':>6} {'boxes':>7} {'AP':>6} {'AP50':>6}"
        rows = [head + (f" {'maskAP':>8} {'maskAP50':>8}" if masks is not None else "")]
        for name, c in self.per_class.items():
            row = f"{name:<{width}} {c.category_id:>6} {c.num_gt:>7} {_cell(c.ap)} {_cell(c.ap50)}"
            if masks is not None:
                m = masks.get(name)
                row += f" {_cell(m.ap if m else -1, 8)} {_cell(m.ap50 if m else -1, 8)}"
            rows.append(row)
        total = sum(c.num_gt for c in self.per_class.values())
        row = f"{'all':<{width}} {'':>6} {total:>7} {_cell(self.ap)} {_cell(self.ap50)}"
        if self.segm is not None:
            row += f" {_cell(self.segm.ap, 8)} {_cell(self.segm.ap50, 8)}"
        rows.append(row)
        if self.empty:
            rows.append(self.nothing_to_score())
        return "\n".join(rows)


def _cell(value: float, width: int = 6) -> str:
    """A metric in a table cell: 3 decimals, or '-' when undefined (negative)."""
    return f"{'-' if value < 0 else format(value, '.3f'):>{width}}"
