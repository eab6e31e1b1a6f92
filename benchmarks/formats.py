"""`rtdetr train` on a second synthetic data set, unlike the demo's (other shapes and colours,
smaller objects, images of varied rectangular sizes, non-contiguous category ids 3, 17, 42, 99),
given in each of the three formats (COCO json, YOLO txt, Pascal VOC xml): does it learn,
without code changes? Chance level is an AP50 of about 0.

    .venv/bin/python benchmarks/formats.py [--epochs 6]

Prints a table (format, AP50, AP50:95, minutes) and writes benchmarks/results/formats.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from rtdetr.data import export_voc, export_yolo, make_synthetic_dataset


def make_sets(root: Path) -> dict[str, Path]:
    coco = make_synthetic_dataset(root / "coco", seed=7, num_train=240, num_val=60,
                                  image_size=((224, 320), (288, 416)), num_classes=4,
                                  shapes=("diamond", "cross", "ellipse"), colours=("yellow", "cyan", "magenta", "orange"),
                                  object_size=(0.08, 0.3), objects_per_image=(1, 8), empty_fraction=0.15,
                                  category_ids=[3, 17, 42, 99], image_format="jpg")
    return {"coco": coco, "yolo": export_yolo(coco, root / "yolo"), "voc": export_voc(coco, root / "voc")}


def train_cli(data: Path, project: Path, name: str, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "rtdetr.cli.app", "train", "--data", str(data), "--model", "demo", "--epochs", str(epochs),
           "--batch", "8", "--imgsz", "224", "--lr-schedule", "cosine", "--workers", "1", "--project", str(project),
           "--name", name, "--exist-ok"]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = torch.load(project / name / "weights" / "best.pt", weights_only=True)["metrics"]
    return {"ap50": metrics["ap50"], "ap": metrics["ap"], "minutes": (time.time() - started) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-formats"))
    parser.add_argument("--formats", nargs="+", default=["coco", "yolo", "voc"])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "formats.json")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    sets = make_sets(args.out / "data")
    rows = {fmt: train_cli(sets[fmt], args.out / "runs", fmt, args.epochs) for fmt in args.formats}
    print(f"{'format':<6} {'AP50':>6} {'AP50:95':>8} {'minutes':>8}   ({args.epochs} epochs, demo model, 224 px)")
    for fmt, r in rows.items():
        print(f"{fmt:<6} {r['ap50']:>6.3f} {r['ap']:>8.3f} {r['minutes']:>8.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"epochs": args.epochs, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
