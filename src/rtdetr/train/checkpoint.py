"""A run's checkpoints: `last.pt` (everything a resume needs, to the step), `best.pt` (the best
validated weights), `best_stage1.pt` (the state the EMA restarts go back to), and resuming from
a `last.pt`. Every file is written atomically (`save_atomic`)."""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import torch

from rtdetr.core import distributed as dist
from rtdetr.core.errors import CheckpointError
from rtdetr.core.io import rng_state, save_atomic, set_rng_state
from rtdetr.eval import EvalResult
from rtdetr.train.distill import PROJECTOR
from rtdetr.train.ema import unwrap


class CheckpointMixin:
    """Checkpoints of `Trainer` (which sets the attributes used here)."""

    def _meta(self) -> dict:
        return {"config": self.model.cfg.to_dict(), "class_names": list(self.class_names),
                "category_ids": list(self.category_ids), "imgsz": list(self.cfg.imgsz)}

    def save_last(self) -> None:
        if not dist.is_main():
            return
        ckpt = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "extra_modules": self.extra_modules.state_dict(),
            "extra_losses": self._extra_loss_states(),
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

    # -- EMA restarts ("stage 2", `TrainRecipe.ema_restart_decay`)

    def _stage1_path(self) -> Path:
        return self.run_dir / "weights" / "best_stage1.pt"

    def after_validation(self, epoch: int, improved: bool) -> None:
        """Before `ema_restart_epoch`: keep the state of each new best (model, EMA, optimizer) to
        restart from. From it on: after an epoch that is no new best, restart from that state
        again with the EMA decay lowered by 1e-4. (Called after each validated epoch, before
        `last.pt` is written, so that a resume continues from the restarted state.)"""
        restart_epoch = self.cfg.ema_restart_epoch
        if restart_epoch is None:
            return
        if epoch < restart_epoch:
            if improved:
                self.save_best_stage1()
        elif not improved:
            self.restart_from_best_stage1(self.ema.decay - 1e-4 if self.ema is not None else None)

    def save_best_stage1(self) -> None:
        if dist.is_main():
            ckpt = {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler else None,
                    "extra_modules": self.extra_modules.state_dict(), "epoch": self.state["epoch"]}
            if self.ema is not None:
                ckpt["ema"] = self.ema.state_dict()
            save_atomic(ckpt, self._stage1_path())
        dist.barrier()  # every process reloads this file later

    def restart_from_best_stage1(self, decay: float | None) -> None:
        """Reload the best stage-1 state (model, EMA, optimizer, scaler, extra modules; not the
        counters, data order or lr schedule, which go on) and set the EMA decay to `decay`
        (None: unchanged). Without a stage-1 state (nothing validated before) the run goes on
        from its current weights, with the new decay."""
        path = self._stage1_path()
        if path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            self._load_training_state(ckpt)
            what = f"the best state so far (epoch {ckpt['epoch'] + 1}) reloaded"
        else:
            what = "no stage-1 state to reload (nothing validated before), going on"
        if self.ema is not None and decay is not None:
            self.ema.decay = decay
        if dist.is_main():
            decay_now = f", EMA decay {self.ema.decay:.4f}" if self.ema is not None else ""
            print(f"EMA restart at epoch {self.state['epoch'] + 1}: {what}{decay_now}")

    def _load_training_state(self, ckpt: dict) -> None:
        """Model, optimizer, EMA, grad scaler and extra modules from a `last.pt` / `best_stage1.pt`."""
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.extra_modules.load_state_dict(ckpt.get("extra_modules", {}))

    def _check_same_extras(self, ckpt: dict, path: Path) -> None:
        """A run resumes with the extra modules it was started with (a distilled run: its teacher)."""
        theirs = sorted({k.split(".")[0] for k in ckpt.get("extra_modules", {})})
        ours = sorted(self.extra_modules.keys())
        if theirs != ours:
            def names(n):
                return ", ".join(n) or "none"
            hint = " (a distilled run: give its --teacher again)" if PROJECTOR in theirs else ""
            raise CheckpointError(f"{path}: was trained with extra modules {names(theirs)}, this run has "
                                  f"{names(ours)}; resume it with the options it was started with{hint}")

    def _extra_loss_states(self) -> dict[str, dict]:
        """The state of each extra loss that keeps one (e.g. the distillation weight), by position."""
        return {str(i): fn.state_dict() for i, fn in enumerate(self.extra_losses) if hasattr(fn, "state_dict")}

    def _load_extra_loss_states(self, states: dict, path: Path) -> None:
        for i, fn in enumerate(self.extra_losses):
            if hasattr(fn, "load_state_dict"):
                if str(i) not in states:
                    raise CheckpointError(f"{path}: has no state for extra loss {i} "
                                          f"({getattr(fn, '__name__', type(fn).__name__)}): resume it with the "
                                          f"options it was started with")
                fn.load_state_dict(states[str(i)])

    def best_result(self) -> EvalResult | None:
        path = self.run_dir / "weights" / "best.pt"
        if not path.exists():
            return None
        return EvalResult.from_dict(torch.load(path, map_location="cpu", weights_only=True)["metrics"])

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
        self._check_same_extras(ckpt, path)
        self._load_training_state(ckpt)
        self._load_extra_loss_states(ckpt.get("extra_losses", {}), path)
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
