"""Model-only CPU latency of zoo architectures (random weights: latency does not depend on them).

    .venv/bin/python benchmarks/latency.py --models rtdetrv2_r18vd --size 640 640 --runs 20

Prints a table and writes JSON (default benchmarks/results/latency.json). Models are timed
interleaved, run by run, so that load on a shared machine affects all of them alike.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import rtdetr
from rtdetr.core.memory import reuse_large_allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["rtdetrv2_r18vd"])
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency.json")
    args = parser.parse_args()
    reuse_large_allocations()  # as rtdetr's command line, predictor and trainer do (rtdetr.core.memory)

    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, *args.size)
    models = {name: rtdetr.load_model(name, weights=None) for name in args.models}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for m in models.values():
                m(x)
        for _ in range(args.runs):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)

    rows = []
    for name, ts in times.items():
        ts_ms = sorted(t * 1e3 for t in ts)
        rows.append({"model": name, "median_ms": statistics.median(ts_ms), "min_ms": ts_ms[0],
                     "p90_ms": ts_ms[int(0.9 * (len(ts_ms) - 1))], "runs": len(ts_ms)})
    print(f"{'model':<24} {'median ms':>10} {'min ms':>8} {'p90 ms':>8}   "
          f"({args.batch}x3x{args.size[0]}x{args.size[1]}, {args.threads} threads, torch {torch.__version__})")
    for r in rows:
        print(f"{r['model']:<24} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {r['p90_ms']:>8.1f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size_hw": list(args.size), "batch": args.batch, "threads": args.threads, "warmup": args.warmup,
            "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor()}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
