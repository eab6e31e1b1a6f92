"""Distillation on the synthetic shapes, on the CPU: a student trained with and without a teacher
at equal epochs, over several seeds, and GAM against the best static weight.

    .venv/bin/python benchmarks/train_synthetic.py --model deim_hgnetv2_s --minutes 24   # the teacher
    .venv/bin/python benchmarks/distill_synthetic.py --teacher runs/train-synthetic/deim_hgnetv2_s/weights/best.pt

The teacher is a larger detector of ours trained on the same data (its AIFI output: the one kind
of teacher that needs no gated weights). The procedure is the maintainers' advice for custom data:
1. `tune-distill` on seed 0: one run per static weight in --grid; the best AP50:95 gives the
   static weight, its mean AIFI gradient share gives GAM's rho (delta 10 % of rho);
2. for every seed: no distillation, the best static weight, and GAM from that band (initial
   weight: the best static one).
Every run has the same epochs, data, augmentation and schedule (the demo recipe with --epochs).
Prints a table and writes benchmarks/results/distill_synthetic.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from rtdetr.core.cpu import cpu_capabilities
from rtdetr.data import make_synthetic_dataset
from rtdetr.train.config import TrainConfig
from rtdetr.train.trainer import train
from rtdetr.train.tune_distill import mean_share, report_table, tune_distill

RESULTS = Path(__file__).parent / "results"


def run(cfg: TrainConfig, **kw) -> dict:
    started = time.time()
    result = train(replace(cfg, **kw))
    out = {"ap": result.best.ap, "ap50": result.best.ap50, "minutes": (time.time() - started) / 60,
           "run_dir": str(result.run_dir)}
    if cfg.teacher or kw.get("teacher"):
        out["share"] = mean_share(result.run_dir / "results.csv")
        with open(result.run_dir / "results.csv", newline="") as f:
            out["weights"] = [float(r["distill_weight"]) for r in csv.DictReader(f)]
    return out


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="runs/train-synthetic/deim_hgnetv2_s/weights/best.pt")
    ap.add_argument("--student", default="demo")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grid", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--data", default="runs/synthetic-data")
    ap.add_argument("--out", default="runs/distill-synthetic")
    args = ap.parse_args()

    data = make_synthetic_dataset(args.data, seed=0, num_train=300, num_val=60)
    base = TrainConfig.from_kwargs(data=str(data), model=args.student, epochs=args.epochs, imgsz=args.imgsz,
                                   batch=args.batch, workers=1, project=args.out, exist_ok=True,
                                   pretrained_backbone=False)
    started = time.time()
    tuning = tune_distill(replace(base, teacher=args.teacher, seed=args.seeds[0], name="tune"), args.grid)
    print(report_table(tuning))
    best_w, rho, delta = tuning["best"]["weight"], tuning["rho"], tuning["delta"]
    runs: dict[str, list[dict]] = {"none": [], "static": [], "gam": []}
    for seed in args.seeds:
        runs["none"].append(run(base, seed=seed, name=f"none_s{seed}"))
        if seed == args.seeds[0]:
            runs["static"].append({**tuning["best"], "weights": [best_w] * args.epochs})
        else:
            runs["static"].append(run(base, seed=seed, name=f"static_s{seed}", teacher=args.teacher, gam=False,
                                      distill_weight=best_w))
        runs["gam"].append(run(base, seed=seed, name=f"gam_s{seed}", teacher=args.teacher, distill_weight=best_w,
                               gam_rho=rho, gam_delta=delta))
    report = {
        "cpu": cpu_capabilities().summary(), "student": args.student, "teacher": args.teacher,
        "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "seeds": args.seeds,
        "tuning": tuning, "static_weight": best_w, "gam_rho": rho, "gam_delta": delta, "runs": runs,
        "minutes": (time.time() - started) / 60,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "distill_synthetic.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{args.student} on the synthetic shapes, {args.epochs} epochs at {args.imgsz}, seeds {args.seeds}; "
          f"teacher {args.teacher}")
    print(f"{'run':<34} {'AP50:95 mean +- sd':>20} {'AP50 mean +- sd':>18}  per seed (AP50:95)")
    names = {"none": "no distillation", "static": f"static lambda {best_w:g}",
             "gam": f"GAM, rho {rho:.3g} +- {delta:.2g} %"}
    for key, label in names.items():
        aps = [r["ap"] for r in runs[key]]
        print(f"{label:<34} {summary(aps):>20} {summary([r['ap50'] for r in runs[key]]):>18}  "
              + " ".join(f"{a:.4f}" for a in aps))
    for r, seed in zip(runs["gam"], args.seeds):
        print(f"GAM seed {seed}: lambda per epoch " + " ".join(f"{w:.3g}" for w in r["weights"])
              + f"; mean AIFI share {r['share']:.3g} %")
    print(f"{report['minutes']:.1f} min; wrote {out}")


if __name__ == "__main__":
    main()
