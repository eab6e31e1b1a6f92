"""A zoo model trained from scratch on the synthetic shapes on the CPU, with its own recipe
shortened to a few epochs: AP50 per epoch, the loss terms, and the wall time per step.

    .venv/bin/python benchmarks/train_synthetic.py --model deim_hgnetv2_s --minutes 14
    .venv/bin/python benchmarks/train_synthetic.py --model dfine_hgnetv2_n --minutes 10

The recipe's losses, weights, schedule shape (flat-cosine, quadratic warm-up), Mosaic / MixUp
policy and EMA restart stay; what a 300-image CPU run cannot follow is scaled down: epochs,
warm-up steps, the epochs of each phase, the EMA decay, and no multi-scale (its sizes start at
480) or ImageNet backbone (no network). Writes benchmarks/results/train_<model>.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from rtdetr.core.cpu import cpu_capabilities
from rtdetr.data import make_synthetic_dataset
from rtdetr.train.recipes import get_recipe
from rtdetr.train.trainer import train

RESULTS = Path(__file__).parent / "results"


def loss_terms(weights: Path, imgsz: int) -> list[str]:
    """The names of the terms the run's criterion gives for the trained model on one batch (the
    criterion as the trainer builds it from the effective configuration in args.yaml)."""
    import torch
    import yaml

    from rtdetr.api import load_model
    from rtdetr.train import HungarianMatcher, RTDETRCriterion
    from rtdetr.train.config import TrainConfig

    args = yaml.safe_load((weights.parent.parent / "args.yaml").read_text())
    cfg = TrainConfig.from_kwargs(**{k: v for k, v in args.items() if k in TrainConfig.__dataclass_fields__})
    net = load_model(weights).model.train()
    criterion = RTDETRCriterion(net.num_classes, HungarianMatcher(), weight_dict=cfg.loss_weights, gamma=cfg.loss_gamma,
                                losses=cfg.losses, use_union_set=cfg.loss_union_set)
    g = torch.Generator().manual_seed(0)
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])}]
    out = net(torch.rand(2, 3, imgsz, imgsz, generator=g), targets=targets)
    return sorted(criterion(out, targets))


def short_policy(epochs: int) -> dict:
    """The recipe's phases at the scale of `epochs`: Mosaic and MixUp from epoch 1 to the middle,
    plain augmentation until two epochs before the end, then none (where the recipe has them)."""
    mid, stop = max(2, epochs // 2), max(3, epochs - 2)
    return {"flat_epoch": mid, "no_aug_epoch": epochs - stop, "aug_stop_epoch": stop, "mosaic_epochs": (1, mid),
            "mixup_epochs": (1, mid), "ema_restart_epoch": stop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deim_hgnetv2_s")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=None, help="time budget (the epochs follow from it)")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--data", default="runs/synthetic-data")
    ap.add_argument("--out", default="runs/train-synthetic")
    args = ap.parse_args()

    data = make_synthetic_dataset(args.data, seed=0, num_train=300, num_val=60)
    recipe = get_recipe(args.model)
    extra = short_policy(args.epochs) if recipe.mosaic_epochs else {"aug_stop_epoch": max(3, args.epochs - 2)}
    if recipe.lr_scheduler != "flatcosine":
        extra.pop("flat_epoch", None), extra.pop("no_aug_epoch", None)
    started = time.time()
    result = train(data=str(data), model=args.model, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                   lr=args.lr, warmup_steps=100, ema_decay=0.999, ema_warmups=100, multiscale=False,
                   pretrained_backbone=False, workers=1, seed=0, project=args.out, name=args.model, exist_ok=True,
                   time=None if args.minutes is None else args.minutes / 60, **extra)
    minutes = (time.time() - started) / 60

    run = result.run_dir
    with open(run / "results.csv") as f:
        epochs = list(csv.DictReader(f))
    steps_per_epoch = -(-300 // args.batch)
    terms = loss_terms(run / "weights" / "best.pt", args.imgsz)
    report = {
        "model": args.model, "cpu": cpu_capabilities().summary(), "imgsz": args.imgsz, "batch": args.batch,
        "minutes": minutes, "epochs_run": result.epochs_run, "loss_terms": len(terms), "terms": terms,
        "ap50_per_epoch": [float(e["ap50"]) for e in epochs], "ap_per_epoch": [float(e["ap"]) for e in epochs],
        "epoch_s": [float(e["time_s"]) for e in epochs], "steps_per_epoch": steps_per_epoch,
        "best_ap50": result.best.ap50, "best_ap": result.best.ap, "policy": extra,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train_{args.model}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "terms"}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
