"""Choosing GAM's band for your own model and data, as RT-DETRv4's maintainers advise: train with
a few static distillation weights, take the AIFI gradient share of the best one as rho and
5-15 % of it as delta.

    rtdetr tune-distill --data D --model M --teacher T --grid 1 5 20 --epochs 3

Each weight is one run (GAM off, everything else as `rtdetr train` would do it) in
project/name_w<weight>; the table gives each run's mean AIFI share (in %, over all its steps),
its best AP50:95 and AP50, and the band suggested from the best run (delta 10 % of rho).
"""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

from rtdetr.train.config import TrainConfig


def tune_distill(cfg: TrainConfig, grid: list[float]) -> dict:
    """Train `cfg` once per static weight in `grid`; returns {"runs": [{weight, share, ap, ap50,
    run_dir}], "best": the best run, "rho", "delta"} and writes it to project/name.json."""
    from rtdetr.train.trainer import train
    if not cfg.teacher:
        raise ValueError("tune-distill needs a teacher (--teacher PATH|NAME)")
    if not grid or any(w <= 0 for w in grid):
        raise ValueError(f"tune-distill needs positive weights to try, got {grid}")
    runs = []
    for weight in grid:
        result = train(replace(cfg, gam=False, distill_weight=float(weight), name=f"{cfg.name}_w{weight:g}",
                               exist_ok=True))
        runs.append({"weight": float(weight), "share": mean_share(result.run_dir / "results.csv"),
                     "ap": result.best.ap if result.best else float("nan"),
                     "ap50": result.best.ap50 if result.best else float("nan"), "run_dir": str(result.run_dir)})
    best = max(runs, key=lambda r: (r["ap"] if r["ap"] == r["ap"] else -1.0))
    report = {"runs": runs, "best": best, "rho": best["share"], "delta": 0.1 * best["share"]}
    out = Path(cfg.project) / f"{cfg.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def mean_share(results_csv: Path) -> float:
    """The mean of a run's per-epoch AIFI gradient shares (results.csv `distill_share`)."""
    with open(results_csv, newline="") as f:
        shares = [float(r["distill_share"]) for r in csv.DictReader(f) if r.get("distill_share") not in (None, "")]
    shares = [s for s in shares if s == s]
    return sum(shares) / len(shares) if shares else float("nan")


def report_table(report: dict) -> str:
    lines = [f"{'weight':>8} {'AIFI share %':>13} {'AP50:95':>8} {'AP50':>7}  run"]
    for r in report["runs"]:
        mark = "  <- best" if r == report["best"] else ""
        lines.append(f"{r['weight']:>8g} {r['share']:>13.3f} {r['ap']:>8.4f} {r['ap50']:>7.4f}  {r['run_dir']}{mark}")
    lines.append(f"suggested band: --distill-weight {report['best']['weight']:g} --gam-rho {report['rho']:.3g} "
                 f"--gam-delta {report['delta']:.2g} (delta 10 % of rho; 5-15 % is the advised range)")
    return "\n".join(lines)
