"""The mask loss weights on the demo: `demo_seg` trained on the demo's synthetic shapes with each
`mask_weights` value (BCE and Dice alike, in the loss and the matching cost), box and mask AP per
epoch side by side.

    .venv/bin/python benchmarks/seg_weights.py [--weights 5 1] [--epochs 5] [--data runs/bench-demo-segment/data]

Each run: 224x224, batch 8, the demo recipe with a cosine schedule over `--epochs`, seed 0, one
after the other (the 2 cores are shared). The data set is made as the demo makes it when missing.
Prints a table and writes benchmarks/results/seg_weights.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from rtdetr.data import make_synthetic_dataset
from rtdetr.train import recipes
from rtdetr.train.trainer import train


def one_run(data: Path, weight: float, epochs: int, out: Path) -> list[dict]:
    base = recipes.RECIPES["demo_seg"]
    recipes.RECIPES["demo_seg"] = replace(base, mask_weights=(weight, weight))
    try:
        started = time.time()
        result = train(data=str(data), model="demo_seg", epochs=epochs, imgsz=224, batch=8, lr_schedule="cosine",
                       workers=1, seed=0, project=str(out), name=f"w{weight:g}", exist_ok=True)
    finally:
        recipes.RECIPES["demo_seg"] = base
    with open(result.run_dir / "results.csv", newline="") as f:
        rows = [{"weight": weight, "epoch": int(r["epoch"]), "box_ap50": float(r["ap50"]), "box_ap": float(r["ap"]),
                 "mask_ap50": float(r["mask_ap50"]), "mask_ap": float(r["mask_ap"])} for r in csv.DictReader(f)]
    rows[-1]["wall_s"] = round(time.time() - started, 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("runs/bench-demo-segment/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/seg-weights"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "seg_weights.json")
    args = parser.parse_args()
    if not (args.data / "annotations" / "instances_train.json").exists():
        make_synthetic_dataset(args.data, seed=0, num_train=300, num_val=60)  # the demo's data set
    rows = [row for w in args.weights for row in one_run(args.data, w, args.epochs, args.out)]
    print(f"demo_seg, 224x224, batch 8, {args.epochs} epochs (cosine), {torch.get_num_threads()} threads")
    print(f"{'weight':>6} {'epoch':>5} {'box AP50':>9} {'box AP':>7} {'mask AP50':>10} {'mask AP':>8}")
    for r in rows:
        print(f"{r['weight']:>6g} {r['epoch']:>5} {r['box_ap50']:>9.3f} {r['box_ap']:>7.3f} {r['mask_ap50']:>10.3f} "
              f"{r['mask_ap']:>8.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
