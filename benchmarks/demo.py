"""The built-in demo, timed: AP50 on its validation split and the wall time (goal: AP50 >= 0.7
within 10 minutes on 2 CPU cores; with --task segment: mask AP50 >= 0.6 within 10 minutes).

    .venv/bin/python benchmarks/demo.py [--out runs/bench-demo]
    .venv/bin/python benchmarks/demo.py --task segment

Prints the result and writes benchmarks/results/demo.json (demo_segment.json).
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
    parser.add_argument("--task", choices=("detect", "segment"), default="detect")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/demo[_segment].json")
    args = parser.parse_args()
    segment = args.task == "segment"
    out = args.out if not segment or args.out != Path("runs/bench-demo") else Path("runs/bench-demo-segment")
    json_path = args.json or Path(__file__).parent / "results" / ("demo_segment.json" if segment else "demo.json")
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    result = run_demo(out, task=args.task)
    wall = time.time() - started
    goal_key, goal = ("mask_ap50", 0.6) if segment else ("ap50", 0.7)
    row = {**result, "task": args.task, "wall_s": round(wall, 1), "goal": f"{goal_key} >= {goal}", "goal_minutes": 10,
           "met": result[goal_key] >= goal and wall <= 600, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine()}
    masks = f" {'maskAP50':>8} {'maskAP':>7}" if segment else ""
    print(f"{'AP50':>6} {'AP50:95':>8}{masks} {'minutes':>8}  goal: {goal_key} >= {goal:.2f} within 10 min")
    values = f" {row['mask_ap50']:>8.3f} {row['mask_ap']:>7.3f}" if segment else ""
    print(f"{row['ap50']:>6.3f} {row['ap']:>8.3f}{values} {wall / 60:>8.1f}  {'met' if row['met'] else 'NOT met'}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
