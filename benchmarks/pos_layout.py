"""Square-trained models on rectangular inputs: COCO AP with each layout of AIFI's position embedding.

The official embedding ("official") gives a cell of a non-square map another cell's embedding;
"consistent" gives each cell the embedding of its own row and column, as on the square maps of
training (rtdetr.models.nn.position). Each model is evaluated on the same validation images,
resized to each size without padding, once per layout; the square size is the control (the two
layouts are identical there, so its two rows must agree).

    .venv/bin/python benchmarks/pos_layout.py --weights runs/demo/train/best.pt --data runs/demo/data \
        --sizes 224x320 320x224 320x480 320x320

Prints a table and writes benchmarks/results/pos_layout.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

import rtdetr
from rtdetr.core.cpu import cpu_capabilities
from rtdetr.models.nn.detector import build_model

RESULTS = Path(__file__).parent / "results" / "pos_layout.json"


def with_layout(detector: rtdetr.Detector, layout: str) -> rtdetr.Detector:
    """A copy of `detector` whose encoder uses `layout` (same weights)."""
    cfg = detector.model.cfg
    net = build_model(replace(cfg, encoder=replace(cfg.encoder, pos_layout=layout)))
    net.load_state_dict(detector.model.state_dict())
    return rtdetr.Detector(net.eval(), class_names=detector.class_names, category_ids=detector.category_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", nargs="+", required=True, help="checkpoints trained at square sizes")
    ap.add_argument("--data", required=True, help="data set folder (its val split is used)")
    ap.add_argument("--sizes", nargs="+", default=["224x320", "320x224", "320x480", "320x320"], help="HxW")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)

    rows = []
    for weights in args.weights:
        base = rtdetr.load_model(weights)
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            for layout in ("official", "consistent"):
                t0 = time.perf_counter()
                res = with_layout(base, layout).val(args.data, imgsz=(h, w), batch=args.batch, workers=0)
                rows.append({"weights": str(weights), "model": base.model.cfg.name, "h": h, "w": w,
                             "layout": layout, "ap": res.ap, "ap50": res.ap50, "seconds": time.perf_counter() - t0})
                print(f"{base.model.cfg.name:<18} {h}x{w:<5} {layout:<11} AP {res.ap:.4f}  AP50 {res.ap50:.4f}",
                      flush=True)

    print(f"\n{'model':<18} {'size':<9} {'AP official':>11} {'AP consistent':>13} {'difference':>10}")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"{a['model']:<18} {a['h']}x{a['w']:<5} {a['ap']:>11.4f} {b['ap']:>13.4f} {b['ap'] - a['ap']:>+10.4f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu_capabilities().summary(), "python": platform.python_version(),
                                   "torch": torch.__version__, "data": args.data, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
