"""The training loop: the official recipe (AdamW groups, warm-up, EMA, AMP, clipping, denoising,
multi-scale, augmentation policy) with checkpoints that resume exactly.

    from rtdetr.train import train
    result = train(data="path/to/dataset", model="rtdetrv2_r18vd", weights="official", epochs=20)

Multi-GPU / multi-node: start the same script or `rtdetr train` under `torchrun`.
"""
from __future__ import annotations

import csv
import signal
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from rtdetr.models import zoo
from rtdetr.models.weights import (CheckpointError, extract_state_dict, load_weights, num_classes_of, read_checkpoint,
                                   resolve_weights)
from rtdetr.core.coco_names import COCO_NAMES
from rtdetr.models.config import ModelConfig
from rtdetr.core.cpu import cpu_capabilities
from rtdetr.data import load_dataset, list_splits
from rtdetr.data.collate import MultiScaleCollate, collate_fn
from rtdetr.data.transforms import AugmentConfig, train_transforms, val_transforms
from rtdetr.eval import CocoEvaluator, EvalResult
from rtdetr.eval.validate import autocast, evaluate
from rtdetr.core.memory import reuse_large_allocations
from rtdetr.models.nn.detector import RTDETR, build_model, module_of
from rtdetr.core import distributed as dist
from rtdetr.core.io import rng_state, save_atomic, set_rng_state
from rtdetr.train.config import TrainConfig
from rtdetr.train.criterion import RTDETRCriterion
from rtdetr.train.ema import ModelEMA, unwrap
from rtdetr.train.finetune import adapt_class_layers
from rtdetr.train.logger import RunLogger
from rtdetr.train.matcher import HungarianMatcher
from rtdetr.train.recipes import TrainRecipe, build_param_groups, get_recipe
from rtdetr.train.sampler import ResumableSampler
from rtdetr.train.schedule import LRSchedule, apply_lr
from rtdetr.train.seeding import SeededTransforms

ExtraLoss = Callable[[SimpleNamespace], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    run_dir: Path
    best: EvalResult | None
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool


# ---------------------------------------------------------------- model and weights

def model_config(cfg: TrainConfig, num_classes: int) -> ModelConfig:
    if isinstance(cfg.model, ModelConfig):
        return cfg.model.with_classes(num_classes)
    return zoo.get_config(cfg.model, num_classes=num_classes)


def initial_weights(cfg: TrainConfig, model: RTDETR, class_names: list[str]) -> list[str]:
    """Load `cfg.weights` into `model`, re-initialising class layers when the classes differ.

    Returns the class names whose score-head rows came from the weights."""
    if cfg.weights is None:
        return []
    path = resolve_weights(cfg.model if cfg.weights == "official" else cfg.weights)
    ckpt = read_checkpoint(path)
    meta = ckpt.get("rtdetr") if isinstance(ckpt.get("rtdetr"), dict) else {}
    return load_for_classes(model, extract_state_dict(ckpt, path), meta.get("class_names"), class_names, path)


def load_for_classes(model: RTDETR, sd: dict, old_names: list[str] | None, class_names: list[str],
                     source) -> list[str]:
    """Copy `sd` into `model`; when its classes differ, class layers start afresh except the rows of
    classes of the same name. Weights with 80 classes and no names are taken to be COCO's."""
    old_names = list(old_names or (COCO_NAMES if num_classes_of(sd) == 80 else []))
    kept = list(class_names)
    if old_names != list(class_names):
        sd, kept = adapt_class_layers(sd, model.state_dict(), old_names, class_names)
    load_weights(model, sd, source, model.cfg.name)
    return kept


def split_groups(groups: list[dict], chosen: set[int], lr: float) -> list[dict]:
    """Each optimiser group split in two: the `chosen` parameters (by id) at `lr`, and the rest."""
    out = []
    for g in groups:
        mine = [p for p in g["params"] if id(p) in chosen]
        rest = [p for p in g["params"] if id(p) not in chosen]
        if mine:
            out.append({**g, "params": mine, "lr": lr})
        if rest:
            out.append({**g, "params": rest})
    return out


def freeze_backbone(model: RTDETR) -> None:
    model.backbone.requires_grad_(False)
    model.backbone.eval()


# ---------------------------------------------------------------- data

def augment_config(cfg: TrainConfig, recipe: TrainRecipe) -> AugmentConfig:
    stop = cfg.aug_stop_epoch if cfg.aug_stop_epoch is not None else recipe.aug_stop_epoch
    multiscale = cfg.multiscale if cfg.multiscale is not None else recipe.scales is not None
    scales = None
    if multiscale:  # the recipe's sizes are for 640; other sizes get the same pattern around them
        scales = recipe.scales if recipe.scales and tuple(cfg.imgsz) == (640, 640) else _scales_around(cfg.imgsz)
    on = cfg.aug
    return AugmentConfig(size=cfg.imgsz, photometric=on, zoom_out=on, iou_crop=on, flip=on,
                         stop_epoch=stop, scales=scales)


def _scales_around(size: tuple[int, int]) -> tuple[int, ...]:
    """The official multi-scale pattern (0.75x .. 1.25x in steps of 32, base size thrice) for `size`."""
    base = max(size)
    lo, hi = int(base * 0.75) // 32 * 32, int(base * 1.25) // 32 * 32
    return tuple(s for s in range(lo, hi + 1, 32) if s != base) + (base, base, base)


def make_loaders(cfg: TrainConfig, recipe: TrainRecipe, per_process_batch: int):
    train_set = load_dataset(cfg.data, "train")
    aug = augment_config(cfg, recipe)
    train_set.transforms = SeededTransforms(train_transforms(aug), cfg.seed)
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=cfg.seed, rank=dist.rank(),
                               world_size=dist.world_size())
    scales_stop = cfg.multiscale_stop_epoch if cfg.multiscale_stop_epoch is not None else recipe.scales_stop_epoch
    collate = MultiScaleCollate(aug.scales, stop_epoch=scales_stop, seed=cfg.seed)
    # Loaders get their own generators: creating an iterator must not draw from the global RNG,
    # or a resumed run would see different denoising noise than the uninterrupted one.
    train_loader = DataLoader(train_set, batch_size=per_process_batch, sampler=sampler, collate_fn=collate,
                              num_workers=cfg.workers, drop_last=len(sampler) >= per_process_batch,
                              generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = None
    val_split = next((s for s in ("val", "test") if s in list_splits(cfg.data)), None)
    if val_split is not None:
        val_set = load_dataset(cfg.data, val_split, transforms=val_transforms(cfg.imgsz))
        val_sampler = ResumableSampler(len(val_set), shuffle=False, rank=dist.rank(), world_size=dist.world_size())
        val_loader = DataLoader(val_set, batch_size=per_process_batch, sampler=val_sampler, collate_fn=collate_fn,
                                num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed))
    return train_set, train_loader, sampler, collate, val_loader


# ---------------------------------------------------------------- the trainer

class Trainer:
    """One training run. `extra_modules` are trained along (optimised and checkpointed, e.g. a
    distillation adapter); each of `extra_losses` maps a context (model, images, targets,
    outputs, epoch, step, extra_modules) to more weighted loss terms."""

    def __init__(self, cfg: TrainConfig, extra_modules: dict[str, nn.Module] | None = None,
                 extra_losses: list[ExtraLoss] | None = None, initial_model: RTDETR | None = None):
        if not cfg.data:
            raise ValueError("no data set given (data=...)")
        self.cfg = cfg
        self.initial_model = initial_model
        self.extra_modules = nn.ModuleDict(extra_modules or {})
        self.extra_losses = list(extra_losses or [])
        self.device = dist.init_distributed(cfg.device)
        if self.device.type == "cpu":
            reuse_large_allocations()  # see rtdetr.core.memory: activations without page faults
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp, "bad")
        if self.amp_dtype == "bad":
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {cfg.amp!r}")
        if self.amp_dtype is torch.float16 and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; on CPU use amp='bf16'")
        caps = cpu_capabilities()
        if self.amp_dtype is torch.bfloat16 and self.device.type == "cpu" and not caps.native_bf16 and dist.is_main():
            warnings.warn(f"amp='bf16' on a CPU without native bf16 ({caps.missing_bf16()} missing): PyTorch "
                          f"emulates it, usually slower than amp='off'", RuntimeWarning, stacklevel=2)
        self.recipe = self._recipe()
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_ap": None, "best_epoch": None,
                      "bad_epochs": 0, "sums": {}, "count": 0,
                      "epochs": cfg.epochs, "train_seconds": 0.0}

    # -- setup

    def _recipe(self) -> TrainRecipe:
        return get_recipe(self.cfg.recipe or (self.cfg.model if isinstance(self.cfg.model, str) else "rtdetrv2_r18vd"))

    def _run_dir(self) -> Path:
        cfg = self.cfg
        if isinstance(cfg.resume, str) and cfg.resume not in ("", "True"):
            return Path(cfg.resume).parent
        base = Path(cfg.project) / cfg.name
        if cfg.resume or cfg.exist_ok or not base.exists():
            return base
        i = 2
        while (Path(cfg.project) / f"{cfg.name}{i}").exists():
            i += 1
        return Path(cfg.project) / f"{cfg.name}{i}"

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.run_dir = dist.broadcast_object(self._run_dir() if dist.is_main() else None)
        world = dist.world_size()
        if cfg.batch % (world * cfg.grad_accum):
            raise ValueError(f"batch {cfg.batch} must divide into {world} processes x {cfg.grad_accum} micro-batches")
        per_process = cfg.batch // (world * cfg.grad_accum)
        (self.train_set, self.train_loader, self.sampler, self.collate,
         self.val_loader) = make_loaders(cfg, self.recipe, per_process)
        self.class_names = self.train_set.class_names
        self.category_ids = self.train_set.category_ids
        self.evaluator = CocoEvaluator.from_dataset(self.val_loader.dataset) if self.val_loader else None

        if self.initial_model is not None:  # Detector.train(data=...): start from this model's weights
            start = module_of(self.initial_model)
            model = build_model(start.cfg.with_classes(len(self.class_names)))
            if not cfg.resume:
                load_for_classes(model, start.state_dict(), getattr(self.initial_model, "class_names", None),
                                 self.class_names, "the model given")
        else:
            model = build_model(model_config(cfg, len(self.class_names)))
            if not cfg.resume:
                initial_weights(cfg, model, self.class_names)
        if cfg.freeze_backbone:
            freeze_backbone(model)
        model.decoder.grad_checkpoint = cfg.grad_checkpoint
        if cfg.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.extra_modules.to(self.device)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_warmups) if cfg.ema else None
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.criterion = RTDETRCriterion(len(self.class_names), HungarianMatcher())
        self.schedule = LRSchedule(
            warmup_steps=self.recipe.warmup_steps if cfg.warmup_steps is None else cfg.warmup_steps,
            kind=cfg.lr_schedule, milestones=self.recipe.lr_milestones, gamma=self.recipe.lr_gamma,
            epochs=cfg.epochs)
        self.net = self.model
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.resume:
            self._load_resume()
        self.logger = RunLogger(self.run_dir) if dist.is_main() else None
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "weights").mkdir(exist_ok=True)

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with the recipe's parameter groups; `lr` overrides scale every group alike (keeping
        the recipe's ratios), `lr_backbone` gives the backbone's parameters their own rate."""
        cfg, recipe = self.cfg, self.recipe
        lr = cfg.lr if cfg.lr is not None else recipe.lr
        wd = cfg.weight_decay if cfg.weight_decay is not None else recipe.weight_decay
        groups = build_param_groups(self.model, recipe)
        for g in groups:
            if "lr" in g:
                g["lr"] *= lr / recipe.lr
        if cfg.lr_backbone is not None:
            groups = split_groups(groups, {id(p) for p in self.model.backbone.parameters()}, cfg.lr_backbone)
        extra = [p for p in self.extra_modules.parameters() if p.requires_grad]
        if extra:
            groups.append({"params": extra})
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=recipe.betas, weight_decay=wd)

    # -- checkpoints

    def _meta(self) -> dict:
        return {"config": self.model.cfg.to_dict(), "class_names": list(self.class_names),
                "category_ids": list(self.category_ids)}

    def save_last(self) -> None:
        if not dist.is_main():
            return
        ckpt = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "extra_modules": self.extra_modules.state_dict(),
            "trainer": dict(self.state),
            "rng": rng_state(),
            "train_config": self.cfg.to_dict(),
            "rtdetr": self._meta(),
        }
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        save_atomic(ckpt, self.run_dir / "weights" / "last.pt")

    def save_best(self, weights: dict, result: EvalResult) -> None:
        if dist.is_main():
            save_atomic({"model": weights, "rtdetr": self._meta(), "metrics": result.to_dict(),
                         "epoch": self.state["epoch"]}, self.run_dir / "weights" / "best.pt")

    def _resume_path(self) -> Path:
        if isinstance(self.cfg.resume, str) and self.cfg.resume not in ("", "True"):
            return Path(self.cfg.resume)
        return self.run_dir / "weights" / "last.pt"

    def _load_resume(self) -> None:
        path = self._resume_path()
        if not path.is_file():
            raise CheckpointError(f"{path}: nothing to resume (no such file)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "trainer" not in ckpt or "optimizer" not in ckpt:
            raise CheckpointError(f"{path}: not a training checkpoint (no optimizer/trainer state); "
                                  f"use weights= to start a new run from it")
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.extra_modules.load_state_dict(ckpt.get("extra_modules", {}))
        self.state.update(ckpt["trainer"])
        if self.cfg.time is None:  # only a time budget's plan outlives the run; else --epochs decides
            self.state["epochs"] = self.cfg.epochs
        self.schedule = replace(self.schedule, epochs=self.state["epochs"])
        set_rng_state(ckpt["rng"])
        self._trim_step_log()

    def _trim_step_log(self) -> None:
        """Forget step rows written after the checkpoint (the resumed run writes them again)."""
        path = self.run_dir / "steps.csv"
        if not dist.is_main() or not path.exists():
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f)]
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= self.state["global_step"]]
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    # -- one optimiser step

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.amp_dtype):
            outputs = self.net(images, targets=targets)
        outputs = _to_float(outputs)
        losses = self.criterion(outputs, targets)
        if self.extra_losses:
            ctx = SimpleNamespace(model=self.model, images=images, targets=targets, outputs=outputs,
                                  epoch=self.state["epoch"], step=self.state["global_step"],
                                  extra_modules=self.extra_modules)
            for fn in self.extra_losses:
                losses.update(fn(ctx))
        return losses

    def train_step(self, micro_batches: list[tuple[torch.Tensor, list[dict]]]) -> dict[str, float]:
        """Forward/backward over the micro-batches, then clip, step, EMA; returns the logs."""
        logs: dict[str, float] = {}
        for images, targets in micro_batches:
            images = images.to(self.device, non_blocking=True)
            targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            losses = self.compute_losses(images, targets)
            loss = sum(losses.values()) / len(micro_batches)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.state['global_step']}: "
                                         f"{ {k: round(v.item(), 4) for k, v in losses.items()} }")
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            for k, v in losses.items():
                logs[k] = logs.get(k, 0.0) + v.item() / len(micro_batches)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        logs.update(self.grad_norms())
        if self.cfg.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self._trainable(), self.cfg.clip_max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        logs["loss"] = sum(v for k, v in logs.items() if k.startswith("loss_"))
        return logs

    def _trainable(self) -> list[torch.Tensor]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + [p for p in self.extra_modules.parameters() if p.requires_grad]

    def grad_norms(self) -> dict[str, float]:
        """Gradient norm of each part: backbone, AIFI (encoder attention), CCFF (fusion), decoder."""
        m = unwrap(self.model)
        aifi = {id(p) for p in m.encoder.encoder.parameters()}
        parts = {
            "backbone": list(m.backbone.parameters()),
            "aifi": list(m.encoder.encoder.parameters()),
            "ccff": [p for p in m.encoder.parameters() if id(p) not in aifi],
            "decoder": list(m.decoder.parameters()),
        }
        out = {}
        for name, params in parts.items():
            grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            out[f"grad_norm/{name}"] = torch.stack(grads).norm().item() if grads else 0.0
        return out

    # -- epochs

    def set_lr(self, epoch: int, progress: float) -> None:
        apply_lr(self.optimizer, self.schedule.factor(self.state["global_step"], epoch, progress))

    def train_epoch(self, epoch: int) -> bool:
        """Returns False when the step budget (`max_steps`) ended the run."""
        cfg, st = self.cfg, self.state
        accum = cfg.grad_accum
        self.train_set.transforms.set_epoch(epoch)
        self.collate.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=st["step_in_epoch"] * accum * self.train_loader.batch_size)
        self.net.train()
        if cfg.freeze_backbone:
            self.model.backbone.eval()
        steps_total = (len(self.sampler) + st["step_in_epoch"] * accum * self.train_loader.batch_size) \
            // (self.train_loader.batch_size * accum)
        bar = tqdm(total=steps_total, initial=st["step_in_epoch"], disable=not dist.is_main(),
                   desc=f"epoch {epoch + 1}/{st['epochs']}", dynamic_ncols=True, leave=True)
        started = time.time()
        pending = []
        for batch in self.train_loader:
            pending.append(batch)
            if len(pending) < accum:
                continue
            self.set_lr(epoch, st["step_in_epoch"] / max(1, steps_total))
            logs = self.train_step(pending)
            pending = []
            logs = dist.mean_over_processes(logs, self.device)
            st["global_step"] += 1
            st["step_in_epoch"] += 1
            for k, v in logs.items():
                st["sums"][k] = st["sums"].get(k, 0.0) + v
            st["count"] += 1
            self.log_step(logs)
            bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            bar.update(1)
            if cfg.save_period_steps and st["global_step"] % cfg.save_period_steps == 0:
                self.save_last()
            if cfg.max_steps is not None and st["global_step"] >= cfg.max_steps or self._over_budget(started):
                bar.close()
                return False
        bar.close()
        return True

    def log_step(self, logs: dict[str, float]) -> None:
        if not dist.is_main():
            return
        lr = self.optimizer.param_groups[0]["lr"]
        path = self.run_dir / "steps.csv"
        new = not path.exists()
        parts = ("backbone", "aifi", "ccff", "decoder")
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "epoch", "loss", "lr"] + [f"grad_norm_{p}" for p in parts])
            w.writerow([self.state["global_step"], self.state["epoch"], repr(logs["loss"]), repr(lr)]
                       + [repr(logs[f"grad_norm/{p}"]) for p in parts])
        self.logger.step(self.state["global_step"], {f"train/{k}": v for k, v in logs.items()} | {"train/lr": lr})

    def validate(self) -> tuple[EvalResult | None, str, dict | None]:
        """Evaluate the EMA and the raw weights; returns the better result, which, and its weights."""
        if self.val_loader is None:
            return None, "", None
        candidates = [("ema", self.ema.module)] if self.ema is not None else []
        candidates.append(("raw", unwrap(self.model)))
        best = (None, "", None)
        for name, model in candidates:
            result = evaluate(model, self.val_loader, self.evaluator, self.device, self.amp_dtype)
            if dist.is_main() and (best[0] is None or result.ap > best[0].ap):
                best = (result, name, model.state_dict())
        return dist.broadcast_object(best[0]) if dist.world_size() > 1 else best[0], best[1], best[2]

    def end_epoch(self, epoch: int, started: float) -> bool:
        """Validate, log, checkpoint; returns True when early stopping says stop."""
        cfg, st = self.cfg, self.state
        means = {k: v / max(1, st["count"]) for k, v in st["sums"].items()}
        result, which, weights = (None, "", None)
        if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == st["epochs"]:
            result, which, weights = self.validate()
        stop = False
        if result is not None:
            improved = st["best_ap"] is None or result.ap > st["best_ap"] + cfg.min_delta
            if improved:
                st["best_ap"], st["best_epoch"], st["bad_epochs"] = result.ap, epoch, 0
                self.save_best(weights, result)
            else:
                st["bad_epochs"] += 1
            stop = cfg.patience is not None and st["bad_epochs"] >= cfg.patience
        if dist.is_main():
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], "weights": which,
                   "time_s": round(time.time() - started, 1), **{k: means.get(k, float("nan")) for k in
                                                                  ("loss", "loss_vfl", "loss_bbox", "loss_giou")}}
            if result is not None:
                row.update({k: getattr(result, k) for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")})
                print(f"epoch {epoch + 1}: AP50:95 {result.ap:.4f}  AP50 {result.ap50:.4f}  ({which} weights)")
            self.logger.epoch(row)
        st.update(epoch=epoch + 1, step_in_epoch=0, sums={}, count=0)
        self.plan_epochs(time.time() - started)
        self.save_last()
        return stop

    def plan_epochs(self, epoch_seconds: float) -> None:
        """Count an epoch's time; with a `time` budget, plan the number of epochs that fits it
        (at least the epochs done) from the mean epoch time, and fit the lr schedule to it."""
        st, budget = self.state, self.cfg.time
        st["train_seconds"] += epoch_seconds
        if budget is None:
            return
        mean = st["train_seconds"] / max(1, st["epoch"])
        planned = max(st["epoch"], int(budget * 3600 // mean)) if mean > 0 else st["epochs"]
        if planned != st["epochs"] and dist.is_main():
            print(f"time budget {budget * 60:.1f} min: {mean:.0f} s per epoch, {planned} epochs in all")
        st["epochs"] = planned
        self.schedule = replace(self.schedule, epochs=planned)

    def _over_budget(self, epoch_started: float) -> bool:
        """Whether the `time` budget is spent (the finished epochs plus this one so far)."""
        if self.cfg.time is None:
            return False
        return self.state["train_seconds"] + time.time() - epoch_started > self.cfg.time * 3600

    def fit(self) -> TrainResult:
        self.setup()
        cfg, st = self.cfg, self.state
        stopped_early = False
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        try:
            while st["epoch"] < st["epochs"]:
                epoch, started = st["epoch"], time.time()
                if not self.train_epoch(epoch):
                    if self._over_budget(started):  # time budget spent: evaluate what was trained
                        self.end_epoch(epoch, started)
                    else:
                        self.save_last()
                    break
                if self.end_epoch(epoch, started):
                    stopped_early = True
                    if dist.is_main():
                        print(f"early stopping: no AP50:95 gain above {cfg.min_delta} for {cfg.patience} epochs")
                    break
        except KeyboardInterrupt:
            self.save_last()  # the position reached, so that --resume continues from here
            if dist.is_main():
                print(f"interrupted; resume with --resume (state saved in {self.run_dir / 'weights' / 'last.pt'})")
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.logger is not None:
                self.logger.close()
        best = self._best_result()
        return TrainResult(self.run_dir, best, st["best_epoch"], st["epoch"], stopped_early)

    def _best_result(self) -> EvalResult | None:
        path = self.run_dir / "weights" / "best.pt"
        if not path.exists():
            return None
        return EvalResult.from_dict(torch.load(path, map_location="cpu", weights_only=True)["metrics"])


def _to_float(outputs):
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float(v) for v in outputs]
    return outputs


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainConfig | None = None, *, initial_model: RTDETR | None = None, **kwargs) -> TrainResult:
    """Train a detector; keyword arguments are `TrainConfig` fields (unknown ones are errors).
    `initial_model`: start from this model's architecture and weights (`Detector.train(data=...)`)."""
    if cfg is None:
        cfg = TrainConfig.from_kwargs(**kwargs)
    elif kwargs:
        cfg = replace(cfg, **kwargs)
    return Trainer(cfg, initial_model=initial_model).fit()
