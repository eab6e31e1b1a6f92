"""Several zoo models side by side: end-to-end latency of every inference path that runs here,
all (model, path) pairs timed interleaved in one run, with each model's ratio to the first one
and the distance of its fused PyTorch inference to a compute floor.

    .venv/bin/python benchmarks/family.py                       # rtdetrv2_r18vd, rtv4_hgnetv2_s, dfine_hgnetv2_n
    .venv/bin/python benchmarks/family.py --models rtdetrv2_r18vd deim_hgnetv2_s --runs 20

Each step is what `rtdetr benchmark` times: decode a 1280x720 JPEG, preprocess, inference,
post-processing (random weights: latency does not depend on them). The floor is the model's
multiply-add FLOPs at the input size (torch.utils.flop_counter, convolutions and matrix
products) over the best float32 GEMM rate measured on this machine with the same threads.
Prints a table and writes benchmarks/results/family.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import rtdetr
from rtdetr.bench.images import decode_image, read_image
from rtdetr.bench.paths import PATHS, Exports, build_predictor, missing
from rtdetr.bench.report import Stats
from rtdetr.bench.timing import interleaved, pipeline_step, torch_threads
from rtdetr.core.cpu import cpu_capabilities

RESULTS = Path(__file__).parent / "results" / "family.json"


def model_gflops(model: torch.nn.Module, imgsz: tuple[int, int]) -> float:
    """FLOPs (2 per multiply-add) of one eval forward at imgsz, in billions."""
    x = torch.rand(1, 3, *imgsz)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def best_gemm_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """The best float32 matrix-product rate seen here: n x n times n x n, best of `repeats`."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    with torch_threads(threads):
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["rtdetrv2_r18vd", "rtv4_hgnetv2_s", "dfine_hgnetv2_n"])
    ap.add_argument("--paths", nargs="+", default=list(PATHS))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    imgsz = (args.imgsz, args.imgsz)
    data, _ = read_image(None)
    skipped = {p: why for p in args.paths if (why := missing(p))}
    paths = [p for p in args.paths if p not in skipped]
    for p, why in skipped.items():
        print(f"skipping {p}: {why}")

    steps, details, gflops = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="rtdetr-family-") as tmp, torch_threads(args.threads):
        for name in args.models:
            torch.manual_seed(0)
            model = rtdetr.load_model(name, weights=None).model.eval()
            gflops[name] = model_gflops(model, imgsz)
            folder = Path(tmp) / name
            folder.mkdir()
            exports = Exports(folder, model, imgsz, [decode_image(data)])
            for p in paths:
                print(f"preparing {name} {p}", flush=True)
                predictor, details[(name, p)] = build_predictor(p, model, exports, imgsz, args.threads, conf=0.5)
                steps[(name, p)] = pipeline_step(predictor, data, 1)
        gemm = best_gemm_gflops(args.threads)
        print(f"timing {len(steps)} steps: {args.warmup} warm-up + {args.runs} runs", flush=True)
        samples = interleaved(steps, args.runs, args.warmup)

    ref = args.models[0]
    rows = []
    for (name, p), s in samples.items():
        e2e, inf = Stats.of(s["e2e"]), Stats.of(s["inference"])
        rows.append({"model": name, "path": p, "detail": details[(name, p)], "e2e_p50_ms": e2e.p50,
                     "e2e_p95_ms": e2e.p95, "inference_p50_ms": inf.p50, "gflops": gflops[name]})
    by = {(r["model"], r["path"]): r for r in rows}
    for r in rows:
        r["e2e_ratio_to_" + ref] = r["e2e_p50_ms"] / by[(ref, r["path"])]["e2e_p50_ms"]
        r["floor_ms"] = r["gflops"] / gemm * 1e3
        r["inference_over_floor"] = r["inference_p50_ms"] / r["floor_ms"]

    cpu = cpu_capabilities()
    print(f"\n{cpu.summary()}; {args.threads} threads; {args.imgsz}x{args.imgsz}, batch 1; best GEMM "
          f"{gemm:.0f} GFLOP/s; median of {args.runs} runs")
    print(f"{'model':<18} {'GFLOPs':>7} {'path':<20} {'e2e ms':>8} {'infer ms':>9} {'x ' + ref:>18} {'infer/floor':>12}")
    for r in sorted(rows, key=lambda r: (paths.index(r["path"]), args.models.index(r["model"]))):
        print(f"{r['model']:<18} {r['gflops']:>7.1f} {r['path']:<20} {r['e2e_p50_ms']:>8.1f} "
              f"{r['inference_p50_ms']:>9.1f} {r['e2e_ratio_to_' + ref]:>18.2f} {r['inference_over_floor']:>12.1f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu.summary(), "python": platform.python_version(), "torch": torch.__version__,
                                   "threads": args.threads, "imgsz": imgsz, "runs": args.runs,
                                   "best_gemm_gflops": gemm, "skipped": skipped, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
