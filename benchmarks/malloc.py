"""glibc's default malloc thresholds vs `rtdetr.core.memory.reuse_large_allocations()`, CPU latency.

    .venv/bin/python benchmarks/malloc.py                  # rtdetrv2_r18vd, 640x640, 2 threads
    .venv/bin/python benchmarks/malloc.py --model rtdetrv2_r50vd --batches 1 2

The setting is process-wide and cannot be undone cleanly, so each measurement runs in a fresh
process, with RTDETR_KEEP_MALLOC=1 (glibc's defaults) or without it (raised thresholds);
the two settings alternate, round after round, so that machine load falls on both alike.
Per process: the eager model and its `optimize_for_inference` copy, each batch size, the median
of --runs after 2 warm-up calls, in ms per image. Prints a table with the ratios and writes
JSON (default benchmarks/results/malloc.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"glibc default": {"RTDETR_KEEP_MALLOC": "1"}, "reuse_large_allocations": {}}


def measure(model_name: str, batches: list[int], runs: int, threads: int) -> dict:
    """In this process: {"eager b1": ms per image, "fused b1": ..., "reused": bool}."""
    import torch

    import rtdetr
    from rtdetr.core.memory import reuse_large_allocations
    reused = reuse_large_allocations()
    torch.set_num_threads(threads)
    model = rtdetr.load_model(model_name, weights=None).eval()
    fused = rtdetr.optimize_for_inference(model, 640)
    out = {"reused": reused}
    with torch.inference_mode():
        for b in batches:
            x = torch.rand(b, 3, 640, 640)
            for name, net in (("eager", model), ("fused", fused)):
                for _ in range(2):
                    net(x)
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    net(x)
                    times.append(time.perf_counter() - t)
                out[f"{name} b{b}"] = 1000 * statistics.median(times) / b
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rtdetrv2_r18vd")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure here
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "malloc.json")
    args = parser.parse_args()
    common = ["--model", args.model, "--runs", str(args.runs), "--threads", str(args.threads),
              "--batches", *map(str, args.batches)]
    if args.one:
        print(json.dumps(measure(args.model, args.batches, args.runs, args.threads)))
        return

    samples: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting, env in SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k != "RTDETR_KEEP_MALLOC"} | env
            done = subprocess.run([sys.executable, __file__, "--one", *common], env=env, capture_output=True,
                                  text=True, check=True)
            samples[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = [k for k in samples["glibc default"][0] if k != "reused"]
    table = {s: {k: statistics.median(r[k] for r in rows) for k in keys} for s, rows in samples.items()}
    print(f"{args.model} 640x640, {args.threads} threads, ms per image (median over {args.rounds} processes "
          f"x {args.runs} runs); thresholds raised: {samples['reuse_large_allocations'][0]['reused']}")
    print(f"{'':<12}{'glibc default':>15}{'reuse':>10}{'ratio':>8}")
    for k in keys:
        a, b = table["glibc default"][k], table["reuse_large_allocations"][k]
        print(f"{k:<12}{a:>15.1f}{b:>10.1f}{b / a:>8.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "threads": args.threads, "table": table,
                                     "samples": samples}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
