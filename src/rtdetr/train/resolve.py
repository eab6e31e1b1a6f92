"""The effective configuration of a run: every TrainConfig field left None takes its recipe's value.

This is the one place where recipe defaults meet user values (the Trainer reads nothing from
the recipe for these fields but through here), and what the run folder's `args.yaml` records.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import yaml

from rtdetr.models import zoo
from rtdetr.models.config import ModelConfig
from rtdetr.models.pretrained import PRETRAINED_BACKBONES
from rtdetr.train.config import TrainConfig
from rtdetr.train.criterion import LOSSES, check_losses
from rtdetr.train.recipes import TrainRecipe, get_recipe
from rtdetr.train.schedule import KINDS, WARMUP_SHAPES

# The recipe of a ModelConfig of your own (as for any architecture without an official one).
DEFAULT_RECIPE = "rtdetrv2_r18vd"

# TrainConfig field -> its value in a recipe.
RECIPE_FIELDS: dict[str, Callable[[TrainRecipe], Any]] = {
    "epochs": lambda r: r.epochs,
    "batch": lambda r: r.total_batch_size,
    "imgsz": lambda r: (r.eval_size, r.eval_size),
    "lr": lambda r: r.lr,
    "weight_decay": lambda r: r.weight_decay,
    "warmup_steps": lambda r: r.warmup_steps,
    "warmup_shape": lambda r: r.warmup_shape,
    "lr_schedule": lambda r: r.lr_scheduler,
    "lr_gamma": lambda r: r.lr_gamma,
    "flat_epoch": lambda r: r.flat_epoch,
    "no_aug_epoch": lambda r: r.no_aug_epoch,
    "ema_decay": lambda r: r.ema_decay,
    "ema_warmups": lambda r: r.ema_warmups,
    "ema_restart_epoch": lambda r: r.ema_restart_epoch,
    "ema_restart_decay": lambda r: r.ema_restart_decay,
    "clip_max_norm": lambda r: r.clip_max_norm,
    "losses": lambda r: tuple(r.losses),
    "loss_weights": lambda r: dict(r.loss_weights),
    "loss_gamma": lambda r: r.loss_gamma,
    "loss_union_set": lambda r: r.loss_union_set,
    "aug_stop_epoch": lambda r: r.aug_stop_epoch,
    "multiscale": lambda r: r.scales is not None,
    "multiscale_stop_epoch": lambda r: r.scales_stop_epoch,
    "mosaic_epochs": lambda r: r.mosaic_epochs,
    "mosaic_prob": lambda r: r.mosaic_prob,
    "mixup_epochs": lambda r: r.mixup_epochs,
    "mixup_prob": lambda r: r.mixup_prob,
    "distill_weight": lambda r: r.distill_weight,
    "distill_default_weight": lambda r: r.distill_default_weight,
    "gam_rho": lambda r: r.gam_rho,
    "gam_delta": lambda r: r.gam_delta,
}


@dataclass(frozen=True)
class Resolved:
    """`config`: the effective TrainConfig (no recipe-backed field left None, except a stop
    epoch the recipe never reaches and `lr_backbone`, None meaning the recipe's groups);
    `recipe`: the recipe it came from; `sources`: for each field not given by the user, where
    its value came from ("recipe", or "model" for choices that follow the architecture)."""

    config: TrainConfig
    recipe: TrainRecipe
    sources: dict[str, str]


def recipe_name(cfg: TrainConfig) -> str:
    """The recipe a run follows: `cfg.recipe`, else the zoo model's own, else `DEFAULT_RECIPE`."""
    if cfg.recipe:
        return cfg.recipe
    return cfg.model if isinstance(cfg.model, str) else DEFAULT_RECIPE


def backbone_name(model: str | ModelConfig) -> str:
    return (model if isinstance(model, ModelConfig) else zoo.get_config(model)).backbone.name


def resolve(cfg: TrainConfig, initial_model: Any = None) -> Resolved:
    """Fill every recipe-backed field of `cfg` that is None from its recipe (see TrainConfig).

    `initial_model`: the run starts from this model's weights (`Detector.train`), so no
    pretrained backbone is loaded. Raises a one-line ValueError for contradictory options."""
    name = recipe_name(cfg)
    recipe = get_recipe(name)
    values, sources = {}, {}
    if cfg.recipe is None:
        values["recipe"], sources["recipe"] = name, "model"
    for field_name, of_recipe in RECIPE_FIELDS.items():
        if getattr(cfg, field_name) is None:
            values[field_name], sources[field_name] = of_recipe(recipe), "recipe"
    if cfg.amp is None:  # the official configs' use_amp means fp16 autocast with a grad scaler, on CUDA
        values["amp"] = "fp16" if recipe.use_amp and cfg.device.startswith("cuda") else "off"
        sources["amp"] = "recipe"
    if cfg.pretrained_backbone is None:
        values["pretrained_backbone"] = _pretrained_by_default(cfg, recipe, initial_model)
        sources["pretrained_backbone"] = "model"
    else:
        _check_pretrained(cfg, initial_model)
    effective = replace(cfg, **values)
    check_losses(effective.losses)
    _check_choices(effective)
    return Resolved(effective, recipe, sources)


def _check_choices(cfg: TrainConfig) -> None:
    """One-line ValueErrors for options the run could not follow."""
    if cfg.lr_schedule not in KINDS:
        raise ValueError(f"lr_schedule {cfg.lr_schedule!r}: use one of {', '.join(KINDS)}")
    if cfg.warmup_shape not in WARMUP_SHAPES:
        raise ValueError(f"warmup_shape {cfg.warmup_shape!r}: use one of {', '.join(WARMUP_SHAPES)}")
    # The criterion drops a term without a weight: a chosen loss must not vanish unnoticed.
    unweighted = [term for name in cfg.losses for term in LOSSES[name] if term not in cfg.loss_weights]
    if unweighted:
        raise ValueError(f"losses {', '.join(cfg.losses)} give term(s) {', '.join(unweighted)} without a weight "
                         f"in loss_weights {cfg.loss_weights}; add them (e.g. loss_weights=...,{unweighted[0]}=1)")
    for key in ("mosaic_epochs", "mixup_epochs"):
        epochs = getattr(cfg, key)
        if epochs is not None and not 0 <= epochs[0] <= epochs[1]:
            raise ValueError(f"{key} {tuple(epochs)}: need 0 <= start <= end")


def effective_config(cfg: TrainConfig, initial_model: Any = None) -> TrainConfig:
    """`cfg` with every recipe-backed field that is None set to its recipe's value."""
    return resolve(cfg, initial_model).config


def _pretrained_by_default(cfg: TrainConfig, recipe: TrainRecipe, initial_model: Any) -> bool:
    """The official recipes start zoo architectures from an ImageNet backbone; weights or a
    starting model already hold one, and demo / own architectures download nothing."""
    if cfg.weights is not None or initial_model is not None or not isinstance(cfg.model, str):
        return False
    return recipe.pretrained_backbone and cfg.model != "demo" and backbone_name(cfg.model) in PRETRAINED_BACKBONES


def _check_pretrained(cfg: TrainConfig, initial_model: Any) -> None:
    if not cfg.pretrained_backbone:
        return
    if cfg.weights is not None or initial_model is not None:
        start = f"weights={cfg.weights}" if cfg.weights is not None else "the model's own weights"
        raise ValueError(f"pretrained_backbone=True conflicts with starting from {start}, which already "
                         f"hold a backbone; drop one of them")
    backbone = backbone_name(cfg.model)
    if backbone not in PRETRAINED_BACKBONES:
        raise ValueError(f"pretrained_backbone=True: no ImageNet-pretrained file for backbone {backbone!r}; "
                         f"known: {', '.join(PRETRAINED_BACKBONES)}")


# ---------------------------------------------------------------- args.yaml

def _plain(value):
    """A value as YAML's safe dumper takes it (tuples as lists, dataclasses as dicts)."""
    if isinstance(value, ModelConfig):
        value = value.to_dict()
    if hasattr(value, "state_dict"):  # a teacher given as a module (Python API): its name
        value = getattr(value, "name", type(value).__name__)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def args_yaml(resolved: Resolved, note: str | None = None) -> str:
    """The effective configuration as YAML, one top-level key per TrainConfig field; a comment
    marks each value that was not given (`# recipe`, `# model`). `TrainConfig.from_kwargs(
    **yaml.safe_load(text))` rebuilds the effective configuration."""
    cfg = resolved.config
    lines = ["# The effective configuration of this run. Values marked '# recipe' come from the recipe",
             f"# {cfg.recipe!r}, '# model' follows the architecture; the others were given or are defaults."]
    if note:
        lines.append(f"# {note}")
    for f in fields(TrainConfig):
        value = _plain(getattr(cfg, f.name))
        # Block style at the top; lists and innermost mappings in flow style, on one line each.
        flow = None if isinstance(value, (list, dict)) else False
        text = yaml.safe_dump({f.name: value}, sort_keys=False, default_flow_style=flow, width=1000).rstrip("\n")
        source = resolved.sources.get(f.name)
        if source is not None and "\n" not in text:
            text += f"  # {source}"
        lines.append(text)
    return "\n".join(lines) + "\n"
