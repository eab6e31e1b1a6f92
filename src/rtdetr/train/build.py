"""Setting up what a run trains: the architecture, its starting weights (detector weights, an
ImageNet-pretrained backbone, or a given model's), and the optimiser's parameter groups."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rtdetr.core import distributed as dist
from rtdetr.core.coco_names import COCO_NAMES
from rtdetr.core.hub import WeightsDownloadError, download
from rtdetr.models import zoo
from rtdetr.models.config import ModelConfig
from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.models.pretrained import PRETRAINED_BACKBONES
from rtdetr.models.weights import (check_compatible, extract_state_dict, load_weights, num_classes_of,
                                   projector_state, read_checkpoint, resolve_weights)
from rtdetr.train.config import TrainConfig
from rtdetr.train.criterion import RTDETRCriterion
from rtdetr.train.matcher import HungarianMatcher
from rtdetr.train.finetune import adapt_class_layers
from rtdetr.train.recipes import TrainRecipe, build_param_groups


def model_config(cfg: TrainConfig, num_classes: int) -> ModelConfig:
    if isinstance(cfg.model, ModelConfig):
        return cfg.model.with_classes(num_classes)
    return zoo.get_config(cfg.model, num_classes=num_classes)


def run_task(cfg: TrainConfig, initial_model=None) -> str:
    """The task, "detect" or "segment", of the run's architecture does (a mask head: segment)."""
    if initial_model is not None:
        return module_of(initial_model).cfg.task
    if isinstance(cfg.model, ModelConfig):
        return cfg.model.task
    return zoo.get_config(cfg.model).task


def make_criterion(cfg: TrainConfig, recipe: TrainRecipe, num_classes: int, task: str = "detect") -> RTDETRCriterion:
    """The run's loss: the effective configuration's losses and weights; a segmentation run adds
    loss 'masks' and the mask matching costs, both weighted by the recipe's `mask_weights`."""
    losses, weights, matcher = tuple(cfg.losses), dict(cfg.loss_weights), HungarianMatcher()
    if task == "segment":
        bce, dice = recipe.mask_weights
        losses += ("masks",) if "masks" not in losses else ()
        weights.update(loss_mask=bce, loss_dice=dice)
        matcher = HungarianMatcher(cost_mask=bce, cost_dice=dice)
    return RTDETRCriterion(num_classes, matcher, weight_dict=weights, gamma=cfg.loss_gamma, losses=losses,
                           use_union_set=cfg.loss_union_set)


def initial_weights(cfg: TrainConfig, model: RTDETR, class_names: list[str],
                    projector: dict | None = None) -> list[str]:
    """Load `cfg.weights` into `model`, re-initialising class layers when the classes differ.
    `projector`, if given, receives the file's training-only distillation projector
    (`projector_state`) and its path under "path", for a distilling run (the file is read once).

    Returns the class names whose score-head rows came from the weights."""
    if cfg.weights is None:
        return []
    path = resolve_weights(cfg.model if cfg.weights == "official" else cfg.weights)
    ckpt = read_checkpoint(path)
    meta = ckpt.get("rtdetr") if isinstance(ckpt.get("rtdetr"), dict) else {}
    sd = extract_state_dict(ckpt, path)
    if projector is not None:
        projector.update(state=projector_state(sd), path=path)
    return load_for_classes(model, sd, meta.get("class_names"), class_names, path)


def load_projector(projector: nn.Module, state: dict[str, torch.Tensor], path) -> bool:
    """Start a distilling run's projector from a weights file's own `state` (RT-DETRv4 releases
    keep theirs, `encoder.feature_projector.0`); True if it did. A file without one, or with one of
    other widths (another teacher), leaves the projector random, and says so."""
    own = projector.state_dict()
    fits = bool(state) and state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own)
    if fits:
        projector.load_state_dict(state)
    if dist.is_main() and state:
        theirs, ours = (tuple(sd["0.weight"].shape[::-1]) for sd in (state, own))
        print(f"distillation projector {ours[0]} -> {ours[1]}: " + ("from " if fits else f"random, as {path}'s "
              f"({theirs[0]} -> {theirs[1]}) does not fit; not from ") + str(path))
    return fits


def load_for_classes(model: RTDETR, sd: dict, old_names: list[str] | None, class_names: list[str],
                     source) -> list[str]:
    """Copy `sd` into `model`; when its classes differ, class layers start afresh except the rows of
    classes of the same name. Weights with 80 classes and no names are taken to be COCO's."""
    old_names = list(old_names or (COCO_NAMES if num_classes_of(sd) == 80 else []))
    sd = with_own_mask_head(model, sd, source)
    kept = list(class_names)
    if old_names != list(class_names):
        sd, kept = adapt_class_layers(sd, model.state_dict(), old_names, class_names)
    load_weights(model, sd, source, model.cfg.name)
    return kept


def with_own_mask_head(model: RTDETR, sd: dict, source) -> dict:
    """A segmentation model starting from a detector's weights (no `mask_head.*` in `sd`, e.g.
    `--weights rtdetrv2_r18vd` for `rtdetrv2_r18vd_seg`) keeps its own, random, mask head."""
    if getattr(model, "mask_head", None) is None or any(k.startswith("mask_head.") for k in sd):
        return sd
    if dist.is_main():
        print(f"mask head: random ({source} is a detector's; its other weights are used)")
    return {**sd, **{f"mask_head.{k}": v for k, v in model.mask_head.state_dict().items()}}


def pretrained_backbone_file(backbone: str) -> Path:
    """The cached ImageNet-pretrained file of `backbone`, downloaded once (the main process
    downloads, the others wait for it, so that no two write the same file)."""
    url = PRETRAINED_BACKBONES[backbone]

    def fetch() -> str:
        try:
            return str(download(url))
        except WeightsDownloadError as e:
            raise WeightsDownloadError(f"ImageNet-pretrained backbone {backbone}: {e}; or train a random "
                                       f"backbone with pretrained_backbone=False (--no-pretrained-backbone)") from e

    if dist.is_main():
        fetch()
    dist.barrier()
    return Path(fetch())


def load_pretrained_backbone(backbone: nn.Module, name: str) -> Path:
    """Copy the ImageNet-pretrained weights of backbone `name` (e.g. "presnet18") into `backbone`;
    returns the file. The official backbones `load_state_dict` these files, so their keys are the
    backbone's own. Batch-norm counters are optional either way: frozen batch norms have none."""
    path = pretrained_backbone_file(name)
    sd = extract_state_dict(read_checkpoint(path), path)
    own = backbone.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.endswith(".num_batches_tracked")}
    check_compatible(backbone, sd, path, f"{name} (backbone)")
    backbone.load_state_dict(sd, strict=False)
    return path


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


def make_optimizer(cfg: TrainConfig, recipe: TrainRecipe, model: RTDETR,
                   extra_modules: nn.Module) -> torch.optim.Optimizer:
    """AdamW with the recipe's parameter groups; an effective `cfg.lr` other than the recipe's
    scales every group alike (keeping the recipe's ratios), `cfg.lr_backbone` gives the backbone's
    parameters their own rate; the extra modules' parameters form a last group."""
    groups = build_param_groups(model, recipe)
    for g in groups:
        if "lr" in g:
            g["lr"] *= cfg.lr / recipe.lr
    if cfg.lr_backbone is not None:
        groups = split_groups(groups, {id(p) for p in model.backbone.parameters()}, cfg.lr_backbone)
    extra = [p for p in extra_modules.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=recipe.betas,
                             weight_decay=cfg.weight_decay)
