"""The built-in demo, timed: AP50 on its validation split and the wall time (goal: AP50 >= 0.7
within 10 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/demo.py [--out runs/bench-demo]

Prints the result and writes benchmarks/results/demo.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from rtdetr.cli.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "demo.json")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.time()
    result = run_demo(args.out)
    wall = time.time() - started
    row = {**result, "wall_s": round(wall, 1), "goal_ap50": 0.7, "goal_minutes": 10,
           "met": result["ap50"] >= 0.7 and wall <= 600, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine()}
    print(f"{'AP50':>6} {'AP50:95':>8} {'minutes':>8}  goal: AP50 >= 0.70 within 10 min")
    print(f"{row['ap50']:>6.3f} {row['ap']:>8.3f} {wall / 60:>8.1f}  {'met' if row['met'] else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
