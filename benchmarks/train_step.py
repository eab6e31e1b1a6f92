"""One training step of a zoo model on the CPU: forward + criterion + backward + clipping +
AdamW + EMA, in fp32 and with bf16 autocast, each in its own process (for its peak memory).

    .venv/bin/python benchmarks/train_step.py --model rtdetrv2_r18vd --size 640 --batch 2 --steps 8
    .venv/bin/python benchmarks/train_step.py --model rtdetrv2_r18vd deim_hgnetv2_s --amp off --rounds 2
    .venv/bin/python benchmarks/train_step.py --model rtdetrv2_r18vd rtdetrv2_r18vd_seg --amp off   # masks' cost

A segmentation model (`*_seg`) trains with the mask loss and matching costs of a segmentation
run (`rtdetr.train.build.make_criterion`), its targets holding a filled-ellipse mask per object.

Several models are run in alternation, `--rounds` times each (one process per run), and each
one's ratio to the first model is printed: the machine's load then affects all alike.

Goals (issue: training): fp32 step <= 1.8 s, bf16 step <= 1.2 s, peak memory <= 2.3 GB, for
rtdetrv2_r18vd at 640x640, batch 2, 2 cores (the official code: 2.02 s, 2.9 GB).
Prints a table and writes benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def one_config(model_name: str, size: int, batch: int, steps: int, amp: str) -> dict:
    """Runs in a fresh process; returns median timings and the process's peak resident memory."""
    import rtdetr
    from rtdetr.train import HungarianMatcher, RTDETRCriterion
    from rtdetr.train.ema import ModelEMA
    from rtdetr.train.recipes import get_recipe, make_optimizer
    from rtdetr.core.memory import reuse_large_allocations
    from rtdetr.train.step import outputs_to_float as to_float

    reuse_large_allocations()  # as the trainer does (rtdetr.core.memory)
    torch.manual_seed(0)
    model = rtdetr.create_model(model_name, num_classes=80).train()
    recipe = get_recipe(model_name)  # the model's own losses (D-FINE family: mal/vfl, boxes, local)
    segment = model.cfg.task == "segment"
    losses, weights, matcher = recipe.losses, dict(recipe.loss_weights), HungarianMatcher()
    if segment:  # as rtdetr.train.build.make_criterion does for a segmentation run
        losses, matcher = losses + ("masks",), HungarianMatcher(cost_mask=recipe.mask_weights[0],
                                                                 cost_dice=recipe.mask_weights[1])
        weights.update(loss_mask=recipe.mask_weights[0], loss_dice=recipe.mask_weights[1])
    criterion = RTDETRCriterion(80, matcher, weight_dict=weights, gamma=recipe.loss_gamma,
                                losses=losses, use_union_set=recipe.loss_union_set)
    optimizer = make_optimizer(model, recipe)
    ema = ModelEMA(model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    targets = [{"labels": torch.randint(0, 80, (6,), generator=g),
                "boxes": torch.cat([torch.rand(6, 2, generator=g) * 0.6 + 0.2, torch.rand(6, 2, generator=g) * 0.3 + 0.05], 1)}
               for _ in range(batch)]
    if segment:
        ys, xs = torch.meshgrid((torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij")
        for t in targets:  # the ellipse inscribed in each box, at the input's resolution
            cx, cy, w, h = (v[:, None, None] for v in t["boxes"].unbind(-1))
            t["masks"] = (((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 <= 1).to(torch.uint8)
    dtype = torch.bfloat16 if amp == "bf16" else None
    rows = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = model(x, targets=targets)
        out = to_float(out)
        terms = criterion(out, targets)
        loss = sum(terms.values())
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        ema.update(model)
        t3 = time.perf_counter()
        rows.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    rows = rows[2:]  # warm-up
    med = [statistics.median(c) for c in zip(*rows)]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"model": model_name, "amp": amp, "size": size, "batch": batch, "step_s": med[0], "forward_s": med[1],
            "backward_s": med[2], "update_s": med[3], "peak_rss_gb": peak_gb, "timed_steps": len(rows),
            "loss_terms": len(terms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["rtdetrv2_r18vd"])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (model, precision), alternating")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_step.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_config(args.model[0], args.size, args.batch, args.steps, args.one)))
        return

    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for model in args.model:
            for amp in args.amp:
                cmd = [sys.executable, __file__, "--model", model, "--size", str(args.size), "--batch", str(args.batch),
                       "--steps", str(args.steps), "--one", amp]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.setdefault((model, amp), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    # Per (model, precision): the run with the median step time.
    results = [sorted(rs, key=lambda r: r["step_s"])[len(rs) // 2] for rs in runs.values()]
    first = {r["amp"]: r["step_s"] for r in results if r["model"] == args.model[0]}
    print(f"{args.size}x{args.size} batch {args.batch}, {torch.get_num_threads()} threads, median of "
          f"{results[0]['timed_steps']} steps after 2 warm-up, {args.rounds} alternating run(s) each")
    print(f"{'model':<20} {'precision':<10} {'terms':>5} {'step s':>7} {'x ' + args.model[0]:>18} {'fwd+loss s':>10} "
          f"{'backward s':>10} {'update s':>9} {'peak GB':>8}")
    for r in results:
        r["ratio_to_first"] = r["step_s"] / first[r["amp"]]
        print(f"{r['model']:<20} {r['amp']:<10} {r['loss_terms']:>5} {r['step_s']:>7.2f} {r['ratio_to_first']:>18.2f} "
              f"{r['forward_s']:>10.2f} {r['backward_s']:>10.2f} {r['update_s']:>9.2f} {r['peak_rss_gb']:>8.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"torch": torch.__version__, "results": results,
                                     "runs": [r for rs in runs.values() for r in rs]}, indent=2))


if __name__ == "__main__":
    main()
