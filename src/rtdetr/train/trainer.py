"""The training loop: the official recipe (AdamW groups, warm-up, EMA, AMP, clipping, denoising,
multi-scale, augmentation policy) with checkpoints that resume exactly.

    from rtdetr.train import train
    result = train(data="path/to/dataset", model="rtdetrv2_r18vd", weights="official", epochs=20)

Multi-GPU / multi-node: start the same script or `rtdetr train` under `torchrun`.

The parts live next to this module: `resolve` (the effective configuration), `build` (model,
starting weights, optimiser), `loaders` (data), `step` (one optimiser step, extra losses),
`checkpoint` (last.pt / best.pt / resume), `stopping` (time budget, early stopping).
"""
from __future__ import annotations

import csv
import signal
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from rtdetr.core import distributed as dist
from rtdetr.core.cpu import cpu_capabilities
from rtdetr.core.memory import reuse_large_allocations
from rtdetr.eval import CocoEvaluator, EvalResult
from rtdetr.eval.validate import evaluate
from rtdetr.models.nn.detector import RTDETR, build_model, module_of
from rtdetr.train.build import (freeze_backbone, initial_weights, load_for_classes, load_pretrained_backbone,
                                load_projector, make_criterion, make_optimizer, model_config, run_task,
                                split_groups)
from rtdetr.train.checkpoint import CheckpointMixin
from rtdetr.train.config import TrainConfig
from rtdetr.train.distill import PROJECTOR, build_distillation
from rtdetr.train.ema import ModelEMA, unwrap
from rtdetr.train.finetune import adapt_class_layers
from rtdetr.train.loaders import augment_config, make_loaders
from rtdetr.train.logger import RunLogger
from rtdetr.train.resolve import args_yaml, resolve
from rtdetr.train.schedule import LRSchedule, apply_lr
from rtdetr.train.step import ExtraLoss, StepMixin
from rtdetr.train.stopping import over_budget, planned_epochs, record_validation

# Kept importable from here (they moved to the modules above).
__all__ = ["Trainer", "TrainResult", "train", "ExtraLoss", "adapt_class_layers", "augment_config",
           "freeze_backbone", "initial_weights", "load_for_classes", "make_loaders", "model_config", "split_groups"]


@dataclass
class TrainResult:
    run_dir: Path
    best: EvalResult | None
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool


def fitness(result: EvalResult) -> float:
    """What picks the best epoch and drives early stopping: the mask AP50:95 of a segmentation
    model's validation, else the box AP50:95."""
    return result.segm.ap if getattr(result, "segm", None) is not None else result.ap


class Trainer(StepMixin, CheckpointMixin):
    """One training run of the effective configuration of `cfg` (`resolve.resolve`: fields left
    None take the recipe's values), kept in `self.cfg`.

    `extra_modules` are trained along (optimised and checkpointed, e.g. a distillation adapter);
    `extra_losses` add loss terms (the contract: `rtdetr.train.step.ExtraLoss`).
    `initial_model`: start from this model's architecture and weights (`Detector.train`)."""

    def __init__(self, cfg: TrainConfig, extra_modules: dict[str, nn.Module] | None = None,
                 extra_losses: list[ExtraLoss] | None = None, initial_model: RTDETR | None = None):
        if not cfg.data:
            raise ValueError("no data set given (data=...)")
        self.resolved = resolve(cfg, initial_model)
        self.cfg, self.recipe = self.resolved.config, self.resolved.recipe
        self.initial_model = initial_model
        self.extra_modules = nn.ModuleDict(extra_modules or {})
        self.extra_losses = list(extra_losses or [])
        self.device = dist.init_distributed(self.cfg.device)
        if self.device.type == "cpu":
            reuse_large_allocations()  # see rtdetr.core.memory: activations without page faults
        self.amp_dtype = self._amp_dtype()
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_ap": None, "best_epoch": None,
                      "bad_epochs": 0, "sums": {}, "count": 0,
                      "epochs": self.cfg.epochs, "train_seconds": 0.0}

    # -- setup

    def _amp_dtype(self):
        amp = self.cfg.amp
        dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, "bad")
        if dtype == "bad":
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {amp!r}")
        if dtype is torch.float16 and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; on CPU use amp='bf16'")
        caps = cpu_capabilities()
        if dtype is torch.bfloat16 and self.device.type == "cpu" and not caps.native_bf16 and dist.is_main():
            warnings.warn(f"amp='bf16' on a CPU without native bf16 ({caps.missing_bf16()} missing): PyTorch "
                          f"emulates it, usually slower than amp='off'", RuntimeWarning, stacklevel=3)
        return dtype

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
        self.task = run_task(cfg, self.initial_model)
        (self.train_set, self.train_loader, self.sampler, self.collate,
         self.val_loader) = make_loaders(cfg, self.recipe, per_process, masks=self.task == "segment")
        self.class_names = self.train_set.class_names
        self.category_ids = self.train_set.category_ids
        self.evaluator = CocoEvaluator.from_dataset(self.val_loader.dataset) if self.val_loader else None

        model = self._initial_model()
        if cfg.freeze_backbone:
            freeze_backbone(model)
        model.decoder.grad_checkpoint = cfg.grad_checkpoint
        if cfg.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.distillation = None
        if cfg.teacher is not None:
            self._setup_distillation()
        self.extra_modules.to(self.device)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_warmups) if cfg.ema else None
        self.optimizer = make_optimizer(cfg, self.recipe, self.model, self.extra_modules)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.criterion = make_criterion(cfg, self.recipe, len(self.class_names), self.task)
        self.schedule = LRSchedule(warmup_steps=cfg.warmup_steps, kind=cfg.lr_schedule,
                                   milestones=self.recipe.lr_milestones, gamma=cfg.lr_gamma,
                                   epochs=cfg.epochs, warmup_shape=cfg.warmup_shape,
                                   flat_epochs=cfg.flat_epoch, no_aug_epochs=cfg.no_aug_epoch)
        self.net = self.model
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.resume:
            self._load_resume()
        columns = [c for fn in self.extra_losses for c in getattr(fn, "columns", ())]
        if self.task == "segment":
            columns += ["loss_mask", "loss_dice", "mask_ap", "mask_ap50", "mask_ap75"]
        self.logger = RunLogger(self.run_dir, extra_columns=columns) if dist.is_main() else None
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "weights").mkdir(exist_ok=True)
            note = "Started from the weights of the model given (Detector.train)." if self.initial_model else None
            (self.run_dir / "args.yaml").write_text(args_yaml(self.resolved, note))

    def _setup_distillation(self) -> None:
        """The teacher, the projector (an extra module: optimised and checkpointed, never part of
        the model; an RT-DETRv4 weights file's own projector starts it) and the loss term."""
        cfg = self.cfg
        self.distillation, projector = build_distillation(cfg, self.model, self.device)
        self.extra_modules[PROJECTOR] = projector
        self.extra_losses.append(self.distillation)
        if self._file_projector.get("state"):
            load_projector(projector, self._file_projector["state"], self._file_projector["path"])
        if dist.is_main():
            gam = self.distillation.gam
            how = (f"GAM, AIFI gradient share {gam.rho:g} +- {gam.delta:g} %" if gam else "static")
            print(f"distillation: teacher {self.distillation.teacher.name} ({self.distillation.teacher.dim} "
                  f"channels), lambda {cfg.distill_weight:g} ({how})")

    def _initial_model(self) -> RTDETR:
        """The architecture with its starting weights: the given model's, `weights`, or an
        ImageNet-pretrained backbone; a resumed run's come from its checkpoint later."""
        cfg = self.cfg
        self._file_projector: dict = {}  # the weights file's distillation projector, if it has one
        if self.initial_model is not None:  # Detector.train(data=...): start from this model's weights
            start = module_of(self.initial_model)
            model = build_model(start.cfg.with_classes(len(self.class_names)))
            if not cfg.resume:
                load_for_classes(model, start.state_dict(), getattr(self.initial_model, "class_names", None),
                                 self.class_names, "the model given")
            return model
        model = build_model(model_config(cfg, len(self.class_names)))
        if cfg.resume:
            return model
        if cfg.weights is not None:
            initial_weights(cfg, model, self.class_names, projector=self._file_projector)
        elif cfg.pretrained_backbone:
            path = load_pretrained_backbone(model.backbone, model.cfg.backbone.name)
            if dist.is_main():
                print(f"backbone: ImageNet-pretrained weights from {path}")
        elif dist.is_main() and self.resolved.sources.get("pretrained_backbone"):
            print(f"backbone: random initial weights ({model.cfg.name} has no pretrained default; "
                  f"pretrained_backbone=True loads ImageNet weights where known)")
        return model

    # -- epochs

    def set_lr(self, epoch: int, progress: float) -> None:
        apply_lr(self.optimizer, self.schedule.factor(self.state["global_step"], epoch, progress))

    def train_epoch(self, epoch: int) -> bool:
        """Returns False when the step budget (`max_steps`) or the time budget ended the run."""
        cfg, st = self.cfg, self.state
        accum = cfg.grad_accum
        if epoch == cfg.ema_restart_epoch and st["step_in_epoch"] == 0:  # "stage 2" starts (resumed: done)
            self.restart_from_best_stage1(cfg.ema_restart_decay)
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
            for fn in self.extra_losses:
                if hasattr(fn, "after_step"):
                    fn.after_step(logs)
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
            if dist.is_main() and (best[0] is None or fitness(result) > fitness(best[0])):
                best = (result, name, model.state_dict())
        return dist.broadcast_object(best[0]) if dist.world_size() > 1 else best[0], best[1], best[2]

    def end_epoch(self, epoch: int, started: float) -> bool:
        """Validate, log, checkpoint; returns True when early stopping says stop."""
        cfg, st = self.cfg, self.state
        means = {k: v / max(1, st["count"]) for k, v in st["sums"].items()}
        result, which, weights = (None, "", None)
        if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == st["epochs"]:
            result, which, weights = self.validate()
        columns = {}
        for fn in self.extra_losses:  # every process: their state must stay the same everywhere
            if hasattr(fn, "end_epoch"):
                columns.update(fn.end_epoch(epoch))
        stop = False
        if result is not None and not result.empty:  # nothing to score: no best, no restart, no stop
            improved, stop = record_validation(st, fitness(result), epoch, cfg.min_delta, cfg.patience)
            if improved:
                self.save_best(weights, result)
            self.after_validation(epoch, improved)
        if dist.is_main():
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], "weights": which,
                   "time_s": round(time.time() - started, 1), **{k: means.get(k, float("nan")) for k in
                                                                  ("loss", "loss_vfl", "loss_bbox", "loss_giou")},
                   **({k: means.get(k, float("nan")) for k in ("loss_mask", "loss_dice")} if self.task == "segment" else {}),
                   **columns}
            if self.distillation is not None:
                print(distill_line(self.distillation))
            if result is not None:
                row.update({k: getattr(result, k) for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")})
                masks = ""
                if result.segm is not None:
                    row.update({f"mask_{k}": getattr(result.segm, k) for k in ("ap", "ap50", "ap75")})
                    masks = f"  masks AP50:95 {result.segm.ap:.4f}  AP50 {result.segm.ap50:.4f}"
                if result.empty:  # COCO's -1 is "no ground truth", not a score
                    print(f"epoch {epoch + 1}: no objects in the validation split to score ({result.num_images} images)")
                else:
                    print(f"epoch {epoch + 1}: AP50:95 {result.ap:.4f}  AP50 {result.ap50:.4f}{masks}  ({which} weights)")
            self.logger.epoch(row)
        st.update(epoch=epoch + 1, step_in_epoch=0, sums={}, count=0)
        self.plan_epochs(time.time() - started)
        self.save_last()
        return stop

    def plan_epochs(self, epoch_seconds: float) -> None:
        """Count an epoch's time; with a `time` budget, plan the number of epochs that fits it
        (`stopping.planned_epochs`), and fit the lr schedule to it."""
        st, budget = self.state, self.cfg.time
        st["train_seconds"] += epoch_seconds
        if budget is None:
            return
        planned = planned_epochs(st["train_seconds"], st["epoch"], budget, st["epochs"])
        if planned != st["epochs"] and dist.is_main():
            mean = st["train_seconds"] / max(1, st["epoch"])
            print(f"time budget {budget * 60:.1f} min: {mean:.0f} s per epoch, {planned} epochs in all")
        st["epochs"] = planned
        self.schedule = replace(self.schedule, epochs=planned)

    def _over_budget(self, epoch_started: float) -> bool:
        return over_budget(self.state["train_seconds"], time.time() - epoch_started, self.cfg.time)

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
        return TrainResult(self.run_dir, self.best_result(), st["best_epoch"], st["epoch"], stopped_early)


def distill_line(d) -> str:
    h = d.history[-1]
    band = f" (band {d.gam.rho - d.gam.delta:g} to {d.gam.rho + d.gam.delta:g} %)" if d.gam else ""
    return (f"distillation: AIFI gradient share {h['share']:.3g} %{band}, lambda {h['weight']:.4g} -> "
            f"{h['next']:.4g} ({h['why']})")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainConfig | None = None, *, initial_model: RTDETR | None = None,
          extra_modules: dict[str, nn.Module] | None = None, extra_losses: list[ExtraLoss] | None = None,
          **kwargs) -> TrainResult:
    """Train a detector; keyword arguments are `TrainConfig` fields (unknown ones are errors),
    and what is not given comes from the recipe (see `TrainConfig`).

    initial_model: start from this model's architecture and weights (`Detector.train(data=...)`).
    extra_modules: {name: module} trained along with the detector (optimised, checkpointed).
    extra_losses:  callables adding loss terms; the contract: `rtdetr.train.step.ExtraLoss`."""
    if cfg is None:
        cfg = TrainConfig.from_kwargs(**kwargs)
    elif kwargs:
        cfg = replace(cfg, **kwargs)
    return Trainer(cfg, extra_modules=extra_modules, extra_losses=extra_losses, initial_model=initial_model).fit()
