"""Eager model vs `optimize_for_inference` and its variants, CPU, side by side in one run.

    .venv/bin/python benchmarks/fused.py                       # rtdetrv2_r18vd, 1x3x640x640, 2 threads
    .venv/bin/python benchmarks/fused.py --compile --profile   # also torch.compile; op profile of the default

Variants (all from one model with the test fixtures' deterministic weight recipe: latency does
not depend on the weights, and unlike random initial weights these give well-separated query
scores, so the outputs can be compared query by query):
  eager          the model as loaded (`model(x)` under torch.inference_mode)
  fold           folded convs / RepVGG, trimmed decoder, fixed-size buffers; NCHW, MKL linears
  fold+cl        ... with channels-last convolution activations
  fold+onednn    ... NCHW, with oneDNN linears and convolutions (activation fused, weights packed)
  default        optimize_for_inference(model): channels-last + oneDNN (float32, exact)
  bf16-trunk     default with dtype=torch.bfloat16 (backbone + encoder; not exact)
  compile        torch.compile (inductor, weight freezing) of `fold`  [--compile; 30-60 s to compile]
  jit            torch.jit.trace + torch.jit.freeze of `fold`         [--jit]

Timed interleaved, run by run, so that load on a shared machine affects all alike; the median
of --runs after --warmup. Prints a table with each variant's ratio to eager and writes JSON
(default benchmarks/results/fused.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment

import rtdetr
from rtdetr.runtime import optimize_for_inference
from rtdetr.runtime.precision import torch_bf16_problem
from rtdetr.core.memory import reuse_large_allocations

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.recipe import recipe_tensor  # noqa: E402


def recipe_model(name: str) -> rtdetr.RTDETR:
    """The zoo model with every weight, bias and norm statistic set by the fixtures' recipe."""
    model = rtdetr.load_model(name, weights=None).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point() and key.rsplit(".", 1)[-1] in ("weight", "bias", "running_mean",
                                                                        "running_var", "in_proj_weight",
                                                                        "in_proj_bias"):
                value.copy_(recipe_tensor(key, list(value.shape)))
    return model


def build_variants(model, size: tuple[int, int], args) -> dict:
    opt = lambda **kw: optimize_for_inference(model, size, **kw)  # noqa: E731
    variants = {
        "eager": model,
        "fold": opt(channels_last=False, onednn=False),
        "fold+cl": opt(channels_last=True, onednn=False),
        "fold+onednn": opt(channels_last=False, onednn=True),
        "default": opt(),
    }
    why = torch_bf16_problem()
    if why is None:
        variants["bf16-trunk"] = opt(dtype=torch.bfloat16)
    else:
        print(f"bf16-trunk skipped: {why}")
    x = torch.rand(args.batch, 3, *size)
    if args.compile:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True  # constant weights: prepacked for oneDNN, convs fused with their ops
        compiled = torch.compile(variants["fold"])
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x)
        print(f"torch.compile: {time.perf_counter() - t0:.0f} s to compile")
        variants["compile"] = compiled
    if args.jit:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(opt(channels_last=False, onednn=False), x, strict=False, check_trace=False)
            variants["jit"] = torch.jit.freeze(traced.eval())
    return variants


def time_variants(variants: dict, x: torch.Tensor, runs: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in variants.values():
                m(x)
        for _ in range(runs):
            for name, m in variants.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    return times


def max_difference(variants: dict, x: torch.Tensor) -> dict[str, float]:
    """Largest |difference| to eager over pred_logits and pred_boxes, per variant.

    Queries are paired one to one (min-cost assignment, as in the tests): near-tied encoder
    scores may legitimately swap two queries' order."""
    with torch.inference_mode():
        outs = {name: m(x) for name, m in variants.items()}
    rows = {name: torch.cat([out["pred_logits"], out["pred_boxes"]], -1).flatten(0, 1).double()
            for name, out in outs.items()}
    diffs = {}
    for name, r in rows.items():
        dist = torch.cdist(rows["eager"], r, p=float("inf"))
        i, j = linear_sum_assignment(dist.numpy())
        diffs[name] = dist[i, j].max().item()
    return diffs


def profile(model, x: torch.Tensor, rows: int = 15) -> None:
    """Where the default optimized model spends its time: per part, then per op (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.inference_mode():
        for _ in range(3):
            model(x)
        xin = x.contiguous(memory_format=torch.channels_last) if model.channels_last else x
        parts = {"backbone": [], "encoder": [], "decoder": []}
        for _ in range(5):
            t0 = time.perf_counter()
            feats = model.backbone(xin)
            t1 = time.perf_counter()
            enc = model.encoder(feats)
            t2 = time.perf_counter()
            model.decoder(enc)
            t3 = time.perf_counter()
            for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(dt * 1e3)
        medians = ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in parts.items())
        print(f"default, per part (median ms): {medians}")
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rtdetrv2_r18vd")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="add torch.compile (about a minute to compile)")
    parser.add_argument("--jit", action="store_true", help="add torch.jit.trace + freeze")
    parser.add_argument("--profile", action="store_true", help="profile the default optimized model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fused.json")
    args = parser.parse_args()
    reuse_large_allocations()  # as rtdetr's command line, predictor and trainer do (rtdetr.core.memory)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = tuple(args.size)
    model = recipe_model(args.model)
    variants = build_variants(model, size, args)
    x = torch.rand(args.batch, 3, *size)
    diffs = max_difference(variants, x)
    times = time_variants(variants, x, args.runs, args.warmup)

    eager = statistics.median(times["eager"]) * 1e3
    rows = []
    for name, ts in times.items():
        ts_ms = sorted(t * 1e3 for t in ts)
        med = statistics.median(ts_ms)
        rows.append({"variant": name, "median_ms": med, "min_ms": ts_ms[0],
                     "p90_ms": ts_ms[int(0.9 * (len(ts_ms) - 1))], "ratio": med / eager,
                     "max_abs_diff": diffs[name], "runs": len(ts_ms)})
    print(f"{args.model}, {args.batch}x3x{size[0]}x{size[1]}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.runs} after {args.warmup} warm-up")
    print(f"{'variant':<12} {'median ms':>10} {'min ms':>8} {'p90 ms':>8} {'x eager':>8} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['variant']:<12} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {r['p90_ms']:>8.1f} "
              f"{r['ratio']:>8.2f} {r['max_abs_diff']:>11.1e}")
    print("(max |diff|: to eager, over pred_logits and pred_boxes, queries paired as a set)")

    if args.profile:
        profile(variants["default"], x)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "size_hw": list(size), "batch": args.batch, "threads": args.threads,
            "runs": args.runs, "warmup": args.warmup, "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor()}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
