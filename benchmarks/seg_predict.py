"""Prediction latency with masks against without: a detector and its segmentation sibling (the
same weights underneath, plus the mask head), on the same picture, through `Predictor`.

    .venv/bin/python benchmarks/seg_predict.py [--model rtdetrv2_r18vd] [--imgsz 640] [--masks 10 100]

The picture is 640x480 (pasted masks are in its pixels); `conf=0` with `max_det=K` keeps exactly
K detections, so a seg row pastes K masks. Each configuration runs `--repeats` pictures after two
warm-up ones, in alternation with the others; medians of the predictor's own per-stage times
(`Result.speed`, ms) are reported, and the ratio of each row's total to the detector's at the same K.
Prints a table and writes benchmarks/results/seg_predict.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import numpy as np
import torch

import rtdetr
from rtdetr.predict.predictor import Predictor


def make_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    detector = rtdetr.create_model(name).eval()
    seg = rtdetr.create_model(f"{name}_seg").eval()
    missing, unexpected = seg.load_state_dict(detector.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("mask_head.") for k in missing)
    return detector, seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rtdetrv2_r18vd")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--masks", type=int, nargs="+", default=[10, 100], help="detections kept (masks pasted)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--no-optimize", action="store_true", help="run the eager model, not the fused copy")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "seg_predict.json")
    args = parser.parse_args()

    detector, seg = make_pair(args.model)
    picture = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    configs = [(kind, k) for k in args.masks for kind in ("detect", "segment")]
    predictors = {(kind, k): Predictor(detector if kind == "detect" else seg, conf=0.0, max_det=k, imgsz=args.imgsz,
                                       optimize=not args.no_optimize) for kind, k in configs}
    times: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for _ in range(2):  # warm-up (and the fused copies are made)
        for c in configs:
            predictors[c](picture)
    for _ in range(args.repeats):
        for c in configs:
            result = predictors[c](picture)[0]
            assert len(result) == c[1] and (result.masks is not None) == (c[0] == "segment")
            times[c].append(result.speed)

    rows = []
    for kind, k in configs:
        med = {stage: statistics.median(t[stage] for t in times[(kind, k)])
               for stage in ("preprocess", "inference", "postprocess")}
        rows.append({"model": args.model if kind == "detect" else f"{args.model}_seg", "task": kind, "detections": k,
                     **{f"{s}_ms": v for s, v in med.items()}, "total_ms": sum(med.values())})
    base = {r["detections"]: r["total_ms"] for r in rows if r["task"] == "detect"}
    path = "eager" if args.no_optimize else "fused"
    print(f"{args.imgsz}x{args.imgsz} network input, a 640x480 picture, {path} path, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'model':<22} {'kept':>5} {'pre ms':>7} {'network ms':>11} {'post ms':>8} {'total ms':>9} {'x detect':>9}")
    for r in rows:
        r["ratio_to_detect"] = r["total_ms"] / base[r["detections"]]
        print(f"{r['model']:<22} {r['detections']:>5} {r['preprocess_ms']:>7.1f} {r['inference_ms']:>11.1f} "
              f"{r['postprocess_ms']:>8.1f} {r['total_ms']:>9.1f} {r['ratio_to_detect']:>9.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"imgsz": args.imgsz, "path": path, "threads": torch.get_num_threads(),
                                     "torch": torch.__version__, "machine": platform.machine(), "rows": rows},
                                    indent=2))


if __name__ == "__main__":
    main()
