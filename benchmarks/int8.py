"""INT8 post-training quantisation (`rtdetr.export.quantize_int8`): latency and accuracy per runtime.

    .venv/bin/python benchmarks/int8.py                         # both parts, ~20 min on 2 busy cores
    .venv/bin/python benchmarks/int8.py --skip-accuracy --runs 15
    .venv/bin/python benchmarks/int8.py --skip-latency --recipes conv:minmax:32 trunk:entropy:32

Latency: `--model` (rtdetrv2_r18vd) with the test fixtures' deterministic weight recipe, exported
at --size (640x640) with its post-processing, batch 1, --threads (2) threads: ONNX Runtime fp32
and int8, OpenVINO fp32, bf16 and int8 (the int8 graph with fp32 or bf16 for its float parts),
each int8 scope of --scopes; PyTorch eager and `optimize_for_inference` for reference. Timed
interleaved, run by run, so that other load on the machine hits all alike, with a 0.2 s pause
before each call (ONNX Runtime's and OpenVINO's threads spin on after a run and would slow the
next variant); the median of --runs after 2 warm-up runs, and each one's speed-up over ONNX
Runtime fp32 (compare ratios, not milliseconds, on a shared machine).

Accuracy: the trained checkpoint --weights (the demo model, 224x224, from `rtdetr demo --out
/tmp/demo2`) on --data's val split: AP50:95
and AP50 of PyTorch, ONNX Runtime fp32, OpenVINO fp32 and bf16, then per int8 recipe
(scope:method:images, calibrated on --calib) ONNX Runtime int8 and OpenVINO int8 (float parts
fp32, and bf16). "agree" is the share of the fp32 graph's detections scoring >= 0.3 on the val
images that the int8 graph reproduces (same label, IoU >= 0.9, one to one); "dscore" the mean
|score difference| over those pairs: finer than AP on a 60-image val set.

Prints both tables and writes JSON (default benchmarks/results/int8.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

import rtdetr
from rtdetr.export import export_onnx
from rtdetr.runtime import OnnxRuntimeModel, OpenVinoModel, optimize_for_inference
from rtdetr.runtime.precision import openvino_precision_problem
from rtdetr.export.quantize import ImageReader, calibration_sources, quantize_int8
from rtdetr.api import val
from rtdetr.core.memory import reuse_large_allocations

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fused import recipe_model  # noqa: E402

DEFAULT_RECIPES = ["conv:minmax:32", "conv:percentile:32", "conv:entropy:32", "conv:minmax:8", "conv:minmax:128",
                   "trunk:minmax:32", "trunk:entropy:32", "all:minmax:32"]


def error_line(e: Exception) -> str:
    """One line of an error; OpenVINO's start with a stack of 'Exception from <file>' lines."""
    lines = [line for line in str(e).strip().splitlines() if line and not line.startswith("Exception from")]
    return f"{type(e).__name__}: {(lines or [''])[0][:110]}"


# ----------------------------------------------------------------------------------------- latency

def latency(args, tmp: Path) -> list[dict]:
    """Median latency of every runtime / precision / scope, interleaved."""
    h, w = args.size
    model = recipe_model(args.model)
    fp32 = export_onnx(model, tmp / "model.onnx", imgsz=(h, w))
    fused = optimize_for_inference(model, (h, w))
    variants = {"pytorch fp32 (eager)": lambda x, s: model(x),
                "pytorch fp32 (fused)": lambda x, s: fused(x),
                "onnxruntime fp32": OnnxRuntimeModel(fp32, threads=args.threads).run,
                "openvino fp32": OpenVinoModel(fp32, "fp32", threads=args.threads).run}
    if (why := openvino_precision_problem("bf16")) is None:
        variants["openvino bf16"] = OpenVinoModel(fp32, "bf16", threads=args.threads).run
    else:
        print(f"openvino bf16 skipped: {why}")
    for scope in args.scopes:
        int8 = quantize_int8(fp32, tmp / f"model.{scope}.int8.onnx", args.calib, max_images=8, scope=scope)
        variants[f"onnxruntime int8 [{scope}]"] = OnnxRuntimeModel(int8, threads=args.threads).run
        for float_part in ("fp32", "bf16") if why is None else ("fp32",):
            try:
                variants[f"openvino int8+{float_part} [{scope}]"] = OpenVinoModel(int8, float_part, args.threads).run
            except RuntimeError as e:  # OpenVINO may refuse to compile a graph
                print(f"openvino int8+{float_part} [{scope}]: {error_line(e)}")
    torch.set_num_threads(args.threads)
    x, sizes = torch.rand(1, 3, h, w), torch.tensor([[w, h]])
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for i in range(2 + args.runs):
            for name, run in variants.items():
                time.sleep(0.2)  # ONNX Runtime's and OpenVINO's threads spin a while after a run
                t0 = time.perf_counter()
                run(x, sizes)
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["onnxruntime fp32"])
    return [{"variant": name, "median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
             "speedup_vs_ort_fp32": base / statistics.median(ts), "runs": len(ts)} for name, ts in times.items()]


# ---------------------------------------------------------------------------------------- accuracy

def detections(model, sources: list, imgsz: tuple[int, int]) -> list[dict]:
    """The model's detections per image (the predictor's pre-processing), as numpy arrays."""
    reader = ImageReader(sources, imgsz, takes_sizes=True)
    out = []
    for source in sources:
        feed = reader.feed(source)
        det = model.detect(feed["images"], feed["orig_target_sizes"])[0]
        out.append({k: v.numpy() for k, v in det.items()})
    return out


def agreement(reference: list[dict], other: list[dict], conf: float = 0.3) -> tuple[float, float]:
    """(share of reference detections scoring >= conf matched by `other` with the same label and
    IoU >= 0.9, one to one; mean |score difference| of the matched pairs)."""
    matched, total, dscore = 0, 0, []
    for a, b in zip(reference, other):
        keep = a["scores"] >= conf
        if not keep.any():
            continue
        iou = box_iou(torch.from_numpy(a["boxes"][keep]), torch.from_numpy(b["boxes"])).numpy()
        iou = iou * (a["labels"][keep][:, None] == b["labels"][None])
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] >= 0.9
        matched, total = matched + int(ok.sum()), total + int(keep.sum())
        dscore += list(np.abs(a["scores"][keep][rows[ok]] - b["scores"][cols[ok]]))
    return matched / max(total, 1), float(np.mean(dscore)) if dscore else float("nan")


def accuracy(args, tmp: Path) -> list[dict]:
    """AP of the trained checkpoint per runtime / precision, and per int8 recipe."""
    net = rtdetr.load_model(args.weights)
    fp32 = export_onnx(net, tmp / "demo.onnx", imgsz=args.accuracy_size)
    imgsz = tuple(args.accuracy_size)
    val_images = calibration_sources(Path(args.data) / "val", 10 ** 6)
    reference = detections(OnnxRuntimeModel(fp32, threads=args.threads), val_images, imgsz)

    def row(name: str, weights, recipe: str = "-", seconds=None, **options) -> dict:
        try:
            r = val(weights, args.data, imgsz=imgsz if str(weights).endswith(".pt") else None, workers=0,
                    threads=args.threads if not str(weights).endswith(".pt") else None, **options)
        except RuntimeError as e:
            print(f"{name} {recipe}: {error_line(e)}")
            return {"variant": name, "recipe": recipe, "error": error_line(e)}
        out = {"variant": name, "recipe": recipe, "ap": r.ap, "ap50": r.ap50}
        if not str(weights).endswith(".pt"):
            runtime = "openvino" if options.get("runtime") == "openvino" else "onnxruntime"
            m = rtdetr.load_model(weights, runtime=runtime, threads=args.threads,
                                  **({"precision": options["precision"]} if "precision" in options else {}))
            out["agree"], out["dscore"] = agreement(reference, detections(m, val_images, imgsz))
        if seconds is not None:
            out["quantise_s"] = seconds
        print(_accuracy_line(out), flush=True)
        return out

    bf16 = openvino_precision_problem("bf16") is None
    rows = [row("pytorch fp32", args.weights), row("onnxruntime fp32", fp32),
            row("openvino fp32", fp32, runtime="openvino")]
    rows += [row("openvino bf16", fp32, runtime="openvino", precision="bf16")] if bf16 else []
    for recipe in args.recipes:
        scope, method, n = recipe.split(":")
        t0 = time.perf_counter()
        int8 = quantize_int8(fp32, tmp / f"demo.{scope}.{method}.{n}.int8.onnx", args.calib,
                             max_images=int(n), method=method, scope=scope)
        seconds = time.perf_counter() - t0
        rows += [row("onnxruntime int8", int8, recipe, seconds),
                 row("openvino int8+fp32", int8, recipe, runtime="openvino")]
        rows += [row("openvino int8+bf16", int8, recipe, runtime="openvino", precision="bf16")] if bf16 else []
    return rows


def _accuracy_line(r: dict) -> str:
    if "error" in r:
        return f"{r['variant']:<20} {r['recipe']:<18} {r['error']}"
    agree = f"{r['agree']:>6.3f} {r['dscore']:>7.4f}" if "agree" in r else f"{'-':>6} {'-':>7}"
    q = f"{r['quantise_s']:>6.0f}" if "quantise_s" in r else ""
    return f"{r['variant']:<20} {r['recipe']:<18} {r['ap']:>7.4f} {r['ap50']:>7.4f} {agree} {q}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rtdetrv2_r18vd", help="latency: zoo model with recipe weights")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scopes", nargs="+", default=["conv", "trunk", "all"], help="latency: int8 scopes")
    parser.add_argument("--weights", default="/tmp/demo2/train/weights/best.pt", help="accuracy: trained checkpoint")
    parser.add_argument("--data", default="/tmp/demo2/data", help="accuracy: its data set (val split used)")
    parser.add_argument("--calib", default="/tmp/demo2/data/train", help="calibration images")
    parser.add_argument("--accuracy-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="scope:method:images")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8.json")
    args = parser.parse_args()
    reuse_large_allocations()  # as rtdetr's command line, predictor and trainer do (rtdetr.core.memory)
    if not args.skip_accuracy and not Path(args.weights).is_file():
        parser.error(f"{args.weights}: no such checkpoint; train the demo model first "
                     f"(`rtdetr demo --out /tmp/demo2`), or pass --weights/--data/--calib, or --skip-accuracy")

    result = {"meta": {"model": args.model, "size_hw": list(args.size), "threads": args.threads, "runs": args.runs,
                       "weights": args.weights, "data": args.data, "calib": args.calib,
                       "torch": torch.__version__, "machine": platform.machine(), "versions": _versions()}}
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        if not args.skip_latency:
            rows = result["latency"] = latency(args, Path(tmp))
            print(f"\n{args.model} {args.size[0]}x{args.size[1]}, batch 1, {args.threads} threads, "
                  f"median of {args.runs} interleaved")
            print(f"{'variant':<30} {'median ms':>10} {'min ms':>8} {'x ORT fp32':>11}")
            for r in rows:
                print(f"{r['variant']:<30} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
                      f"{r['speedup_vs_ort_fp32']:>11.2f}")
        if not args.skip_accuracy:
            print(f"\n{Path(args.weights).name} on {args.data} (val)")
            print(f"{'variant':<20} {'recipe':<18} {'AP':>7} {'AP50':>7} {'agree':>6} {'dscore':>7} {'quant s':>6}")
            result["accuracy"] = accuracy(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def _versions() -> dict:
    import onnxruntime
    import openvino
    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


if __name__ == "__main__":
    main()
