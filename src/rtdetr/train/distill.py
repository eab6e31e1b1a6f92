"""RT-DETRv4's distillation, in training only: the Deep Semantic Injector pulls the student's AIFI
output F5 towards a frozen teacher's features, with a weight that Gradient-guided Adaptive
Modulation (`rtdetr.train.gam`) sets each epoch.

    rtdetr train --data D --model rtv4_hgnetv2_s --teacher dinov3_vitb16
    train(data=D, model="rtdetrv2_r18vd", teacher="runs/train/big/weights/best.pt")   # self-distillation

Per micro-batch: F5 [B, C, h, w] (the detector's training output `aifi`) -> tokens [B, h*w, C] ->
the projector (one Linear C -> D, the official `encoder.feature_projector.0`) -> [B, h*w, D];
the teacher's features [B, D, h, w] of the same batch (`rtdetr.train.teachers`);
loss_distill = lambda * mean over images and positions of (1 - cosine(student, teacher)).
The projector is an extra module of the run (optimised and checkpointed in last.pt, never in the
model), the teacher is no module of the run at all: the trained model, its state dict, exports
and speed are those of an undistilled model, and validation or prediction never need the teacher.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.train.gam import GAMSettings, gam_update

PROJECTOR = "feature_projector"  # its name among the run's extra modules


def make_projector(student_dim: int, teacher_dim: int) -> nn.Sequential:
    """Linear student_dim -> teacher_dim, keyed as the official projector ("0.weight", "0.bias")."""
    return nn.Sequential(nn.Linear(student_dim, teacher_dim))


def cosine_distill_loss(student: torch.Tensor, teacher: torch.Tensor, projector: nn.Module) -> torch.Tensor:
    """student F5 [B, C, h, w], teacher features [B, D, h, w] -> mean of 1 - cosine over B*h*w."""
    if student.shape[-2:] != teacher.shape[-2:]:  # a teacher should give the student's grid; be safe
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    s = projector(student.flatten(2).transpose(1, 2).float())  # [B, h*w, D]
    t = teacher.flatten(2).transpose(1, 2).float()
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


class Distillation:
    """An extra loss of the run (`rtdetr.train.step.ExtraLoss`) with the hooks the trainer calls:
    `after_step(logs)` (the step's AIFI gradient share), `end_epoch(epoch)` (the GAM update; it
    returns the epoch's columns for results.csv), and `state_dict` / `load_state_dict` (lambda and
    the epoch's running share, saved in last.pt, so that a resume continues exactly).

    teacher: a `rtdetr.train.teachers.Teacher`; weight: the initial lambda; gam: None for a static
    lambda (the share is still measured and logged)."""

    columns = ("distill_share", "distill_weight", "distill_weight_next")  # of results.csv, from end_epoch

    def __init__(self, teacher: nn.Module, weight: float, gam: GAMSettings | None = None):
        self.teacher = teacher
        self.weight = float(weight)
        self.gam = gam
        self.share_sum, self.share_steps = 0.0, 0
        self.history: list[dict] = []  # per epoch: share, the weight used, the next weight, why
        self.__name__ = "distillation"

    def __call__(self, ctx: SimpleNamespace) -> dict[str, torch.Tensor]:
        f5 = ctx.outputs.get("aifi")
        if f5 is None:
            raise ValueError("distillation needs the detector's training output 'aifi' (AIFI's map F5)")
        target = self.teacher(ctx.images, tuple(f5.shape[-2:]))
        loss = cosine_distill_loss(f5, target, ctx.extra_modules[PROJECTOR])
        return {"loss_distill": loss * self.weight}

    def after_step(self, logs: dict[str, float]) -> None:
        """Count the step's AIFI share (already the same on every process); a step whose gradient
        overflowed (fp16) is left out rather than counted as 0, which would pull the mean down."""
        share = logs.get("grad_share/aifi", float("nan"))
        if math.isfinite(share):
            self.share_sum += share
            self.share_steps += 1

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """The GAM update after `epoch`; returns {distill_share, distill_weight (used in this
        epoch), distill_weight_next}."""
        share = self.share_sum / self.share_steps if self.share_steps else float("nan")
        used = self.weight
        reason = "static"
        if self.gam is not None:
            self.weight, reason = gam_update(used, share, epoch, self.gam)
        self.history.append({"epoch": epoch, "share": share, "weight": used, "next": self.weight, "why": reason})
        self.share_sum, self.share_steps = 0.0, 0
        return {"distill_share": share, "distill_weight": used, "distill_weight_next": self.weight}

    def state_dict(self) -> dict:
        return {"weight": self.weight, "share_sum": self.share_sum, "share_steps": self.share_steps,
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.weight = float(state["weight"])
        self.share_sum, self.share_steps = float(state["share_sum"]), int(state["share_steps"])
        self.history = list(state.get("history", []))


def build_distillation(cfg, student: nn.Module, device: torch.device) -> tuple[Distillation, nn.Module]:
    """The run's Distillation and its projector, from the effective TrainConfig (`teacher`,
    `distill_weight`, `gam`, `gam_rho`, `gam_delta`, `distill_default_weight`, and the
    recipe's multi-scale stop epoch, where GAM's stage 2 starts)."""
    from rtdetr.train.teachers import load_teacher
    teacher = load_teacher(cfg.teacher, device=device)
    gam = None
    if cfg.gam:
        gam = GAMSettings(cfg.gam_rho, cfg.gam_delta, cfg.distill_default_weight, cfg.multiscale_stop_epoch)
    projector = make_projector(student.encoder.hidden_dim, teacher.dim)
    return Distillation(teacher, cfg.distill_weight, gam), projector
