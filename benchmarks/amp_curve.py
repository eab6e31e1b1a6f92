"""Does bf16 autocast train like fp32? A short run of the demo model on the synthetic set in
fp32 and in bf16 (same seed), and in fp32 with another seed as the yardstick of run-to-run noise.

    .venv/bin/python benchmarks/amp_curve.py [--steps 80]

Prints the mean loss over windows of steps for each run and the gaps between runs; writes
benchmarks/results/amp_curve.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from rtdetr.data import make_synthetic_dataset
from rtdetr.train.trainer import train


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "steps.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def windows(values: list[float], size: int) -> list[float]:
    return [sum(values[i:i + size]) / len(values[i:i + size]) for i in range(0, len(values), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-amp"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "amp_curve.json")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    data = make_synthetic_dataset(args.out / "data", seed=0, num_train=160, num_val=8)
    runs = {"fp32": ("off", 0), "bf16": ("bf16", 0), "fp32 seed 1": ("off", 1)}
    curves = {}
    for name, (amp, seed) in runs.items():
        result = train(data=str(data), model="demo", imgsz=224, batch=8, epochs=100, max_steps=args.steps, amp=amp,
                       seed=seed, workers=1, lr_schedule="cosine", project=str(args.out), name=name.replace(" ", "_"),
                       exist_ok=True)
        curves[name] = windows(losses(result.run_dir), args.window)

    def gap(a: str, b: str) -> float:  # mean relative gap between two runs' windowed losses
        return sum(abs(x - y) / y for x, y in zip(curves[a], curves[b])) / len(curves[a])

    print(f"mean loss per {args.window} steps")
    print(f"{'steps':<10}" + "".join(f"{n:>13}" for n in curves))
    for i in range(len(curves["fp32"])):
        print(f"{i * args.window + 1:>4}-{(i + 1) * args.window:<5}" + "".join(f"{c[i]:>13.3f}" for c in curves.values()))
    result = {"bf16_vs_fp32": gap("bf16", "fp32"), "fp32_seed1_vs_fp32": gap("fp32 seed 1", "fp32"), "curves": curves}
    print(f"mean relative gap: bf16 vs fp32 {result['bf16_vs_fp32']:.3f}; "
          f"fp32 seed 1 vs seed 0 (noise) {result['fp32_seed1_vs_fp32']:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
