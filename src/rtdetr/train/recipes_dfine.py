"""The D-FINE, DEIM and RT-DETRv4 COCO training recipes, as `TrainRecipe` keyword arguments.

`recipes.RECIPES` turns each entry into a `TrainRecipe`; look recipes up with `get_recipe`.
The values are read from the RT-DETRv4 repository's `configs/` (`V4_CONFIGS`), which holds
D-FINE (`dfine/`), DEIM on D-FINE (`deim/deim_hgnetv2_*`), DEIM on RT-DETRv2
(`deim/deim_rtv2_*`) and RT-DETRv4 (`rtv4/`). Each model config includes, in order:

- D-FINE: `dataset/coco_detection.yml`, `runtime.yml`, `base/dataloader.yml`,
  `base/optimizer.yml`, `base/dfine_hgnetv2.yml`, then its own keys;
- DEIM-D-FINE and RT-DETRv4: the D-FINE config of the same size, then `base/deim.yml` or
  `base/rtv4.yml`, then their own keys;
- DEIM-RT-DETRv2: `rtv2/rtv2_*.yml` (which includes `base/rtv2_optimizer.yml` and
  `base/rtv2_r50vd.yml`), then `base/rtv2_deim.yml`, then its own keys.

Shared:
- AdamW (0.9, 0.999), gradients clipped to norm 0.1, AMP as configured (`use_amp: True`);
- the flat-cosine schedule (`lrsheduler: flatcosine`) with a quadratic warm-up per iteration.
  D-FINE: 500 warm-up iterations, `lr_gamma` 1 and `flat_epoch` 4e6, i.e. constant after the
  warm-up (what the RT-DETRv4 repository runs; the D-FINE repository itself uses a 500-step
  linear warm-up and a MultiStepLR whose milestone 500 is never reached: constant as well).
  DEIM / RT-DETRv4: 2000 warm-up iterations, flat until `flat_epoch`, cosine down to
  `lr_gamma` x lr at `epochs - no_aug_epoch`, then constant;
- EMA decay 0.9999 with 1000 warm-up updates (RT-DETRv2-based: 2000), 32 images per step
  (N: 128; RT-DETRv2-based: 16), evaluation at 640 x 640, an ImageNet-pretrained backbone;
- the EMA restarts of "stage 2" at the collate `stop_epoch` (`scales_stop_epoch`), with
  `ema_restart_decay` (`TrainRecipe.ema_restart_decay` says what it does here);
- multi-scale: `[480..608] + [640] * base_size_repeat + [800..672]` (`official_scales`) until
  the collate `stop_epoch`; `base_size_repeat` S 20, M 6, L 4, X 3, N none (no multi-scale),
  RT-DETRv2-based 3 (r18: none, see below).

Losses (the criterion's names; weights by term):
- D-FINE: vfl, boxes, local (FGL + DDF): vfl 1, bbox 5, giou 2, fgl 0.15, ddf 1.5; VFL alpha
  0.75, gamma 2;
- DEIM-D-FINE and RT-DETRv4: mal, boxes, local with mal 1 (the rest as D-FINE), MAL gamma 1.5.
  RT-DETRv4's distillation term (`loss_distill`, from a DINOv3 teacher) is not a criterion
  loss here: it needs the teacher model and belongs in `extra_losses`;
- DEIM-RT-DETRv2: mal, boxes: mal 1, bbox 5, giou 2, MAL gamma 1.5;
- the union set of matched pairs for the box and local terms (`use_uni_set`, default True)
  everywhere except DEIM-RT-DETRv2 (`base/rtv2_r50vd.yml` sets it False).

DEIM's "Dense O2O" augmentation (DEIM and RT-DETRv4): Mosaic with probability 0.5 in
`mosaic_epochs` [e0, e1), the strong augmentations only in [e0, e2) (`aug_stop_epoch` is e2),
MixUp with probability 0.5 in `mixup_epochs` (see `rtdetr.data.transforms.Compose` and
`rtdetr.data.collate`). D-FINE stops the strong augmentations at `aug_stop_epoch`, as v2.

Parameter groups are copied literally, precedence pitfalls included. In
`'^(?=.*backbone)(?!.*norm|bn).*$'` the alternation binds loosest: it reads "not (contains
'norm' or starts with 'bn')", and no name starts with "bn". So that group *does* take
HGNetv2's batch norms (named `.bn.`; trainable in DEIM / RT-DETRv4 L and X, where the
backbone is not frozen): backbone lr, with weight decay. Likewise D-FINE N/S/M's
`'^(?=.*backbone)(?=.*norm|bn).*$'` matches no HGNetv2 parameter and stays empty. The
groups are kept as configured so that training reproduces the published runs. (Our
HGNetv2 calls `aggregation.0/.1` `aggregation_squeeze_conv/aggregation_excitation_conv`:
neither contains "norm" or "bn", so every regex here sees what it sees officially.)

DEIM-RT-DETRv2 r18's config sets `collate_fn.scales: ~`, which the official collate
function does not accept (building its loader raises a TypeError); taken here as meant,
no multi-scale, as the RT-DETRv2 r18 configs it comes from.
"""
from __future__ import annotations

from typing import Any

V4_CONFIGS = "https://github.com/RT-DETRs/RT-DETRv4/tree/main/configs/"

NO_DECAY = {"weight_decay": 0.0}

DFINE_WEIGHTS = {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_fgl": 0.15, "loss_ddf": 1.5}
DEIM_WEIGHTS = {"loss_mal": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_fgl": 0.15, "loss_ddf": 1.5}
DEIM_RTV2_WEIGHTS = {"loss_mal": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def official_scales(base_size_repeat: int | None, base_size: int = 640) -> tuple[int, ...] | None:
    """The multi-scale sizes of the D-FINE collate function: 0.75x up to the base size in steps
    of 32, the base size `base_size_repeat` times, then 1.25x down in steps of 32 (None: none)."""
    if base_size_repeat is None:
        return None
    low, high = int(base_size * 0.75 / 32) * 32, int(base_size * 1.25 / 32) * 32
    n = (base_size - low) // 32
    return (tuple(low + 32 * i for i in range(n)) + (base_size,) * base_size_repeat
            + tuple(high - 32 * i for i in range(n)))


# ---------------------------------------------------------------- parameter groups, verbatim

def dfine_nsm_groups(backbone_lr: float) -> tuple:
    """D-FINE N/S/M (and DEIM N): backbone at its lr; a backbone-norm group (empty on HGNetv2);
    encoder/decoder norms and biases without weight decay."""
    return (
        (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": backbone_lr}),
        (r"^(?=.*backbone)(?=.*norm|bn).*$", {"lr": backbone_lr, "weight_decay": 0.0}),
        (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", NO_DECAY),
    )


def backbone_and_head_norm_groups(backbone_lr: float) -> tuple:
    """D-FINE L/X, DEIM and RT-DETRv4 L/X: the whole backbone (batch norms included, see the
    module docstring) at its lr; encoder/decoder norms without weight decay."""
    return (
        (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": backbone_lr}),
        (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", NO_DECAY),
    )


def deim_sm_groups(backbone_lr: float) -> tuple:
    """DEIM and RT-DETRv4 S/M: the backbone but its batch norms at its lr; every norm and batch
    norm (the backbone's at the base lr) without weight decay."""
    return (
        (r"^(?=.*backbone)(?!.*bn).*$", {"lr": backbone_lr}),
        (r"^(?=.*(?:norm|bn)).*$", NO_DECAY),
    )


def deim_rtv2_groups(backbone_lr: float | None) -> tuple:
    """DEIM-RT-DETRv2: the backbone without norms at its lr (r18: no such group); every norm
    without weight decay."""
    every_norm = ((r"^(?=.*(?:norm|bn)).*$", NO_DECAY),)
    if backbone_lr is None:
        return every_norm
    return ((r"^(?=.*backbone)(?!.*norm).*$", {"lr": backbone_lr}),) + every_norm


# ---------------------------------------------------------------- the recipes

_DFINE = dict(
    betas=(0.9, 0.999), lr_scheduler="flatcosine", warmup_shape="quadratic", warmup_steps=500,
    lr_milestones=(), lr_gamma=1.0, flat_epoch=4_000_000, no_aug_epoch=0, ema_decay=0.9999,
    ema_warmups=1000, clip_max_norm=0.1, total_batch_size=32, eval_size=640, use_amp=True,
    losses=("vfl", "boxes", "local"), loss_weights=DFINE_WEIGHTS, loss_gamma=2.0, loss_union_set=True,
    pretrained_backbone=True, config_root=V4_CONFIGS,
)

# size: epochs, lr, weight decay, groups, stop epoch, base_size_repeat, batch, ema restart decay
_DFINE_SIZES: dict[str, tuple] = {
    "n": (160, 8e-4, 1e-4, dfine_nsm_groups(4e-4), 148, None, 128, 0.9999),
    "s": (132, 2e-4, 1e-4, dfine_nsm_groups(1e-4), 120, 20, 32, 0.9999),
    "m": (132, 2e-4, 1e-4, dfine_nsm_groups(2e-5), 120, 6, 32, 0.9999),
    "l": (80, 2.5e-4, 1.25e-4, backbone_and_head_norm_groups(1.25e-5), 72, 4, 32, 0.9999),
    "x": (80, 2.5e-4, 1.25e-4, backbone_and_head_norm_groups(2.5e-6), 72, 3, 32, 0.9998),
}


def _dfine(size: str) -> dict[str, Any]:
    epochs, lr, wd, groups, stop, repeat, batch, restart = _DFINE_SIZES[size]
    return dict(_DFINE, epochs=epochs, lr=lr, weight_decay=wd, param_groups=groups, aug_stop_epoch=stop,
                scales=official_scales(repeat), scales_stop_epoch=stop, total_batch_size=batch,
                ema_restart_decay=restart, config=f"dfine/dfine_hgnetv2_{size}_coco.yml")


# `base/deim.yml` (and `base/rtv4.yml`) over a D-FINE config: schedule and losses
_DEIM = dict(warmup_steps=2000, lr_gamma=0.5, losses=("mal", "boxes", "local"), loss_weights=DEIM_WEIGHTS,
             loss_gamma=1.5)

# size: epochs, lr, weight decay, groups, flat_epoch, no_aug_epoch, policy [e0, e1, e2] (mixup [e0, e1), stop e2)
_DEIM_SIZES: dict[str, tuple] = {
    "n": (160, 8e-4, 1e-4, dfine_nsm_groups(4e-4), 7800, 12, (4, 78, 148)),
    "s": (132, 4e-4, 1e-4, deim_sm_groups(2e-4), 64, 12, (4, 64, 120)),
    "m": (102, 4e-4, 1e-4, deim_sm_groups(4e-5), 49, 12, (4, 49, 90)),
    "l": (58, 5e-4, 1.25e-4, backbone_and_head_norm_groups(2.5e-5), 29, 8, (4, 29, 50)),
    "x": (58, 5e-4, 1.25e-4, backbone_and_head_norm_groups(5e-6), 29, 8, (4, 29, 50)),
}


def _dense_o2o(base: dict, epochs, lr, wd, groups, flat, no_aug, policy, config: str) -> dict[str, Any]:
    """`base` with a model's own keys and the Dense O2O policy (Mosaic and MixUp, p 0.5)."""
    e0, e1, e2 = policy
    return dict(base, mosaic_prob=0.5, mixup_prob=0.5, epochs=epochs, lr=lr, weight_decay=wd, param_groups=groups, flat_epoch=flat,
                no_aug_epoch=no_aug, mosaic_epochs=(e0, e1), mixup_epochs=(e0, e1), aug_stop_epoch=e2,
                scales_stop_epoch=e2, config=config)


# RT-DETRv4's distillation per size (`rtv4/rtv4_hgnetv2_*_coco.yml`): the initial `loss_distill`
# weight, `distill_adaptive_params` default_weight, rho and delta (in % of the gradient).
_RTV4_DISTILL: dict[str, tuple[float, float, float, float]] = {
    "s": (5.0, 20.0, 11.0, 1.0), "m": (5.0, 15.0, 3.5, 0.25), "l": (15.0, 15.0, 2.0, 0.1), "x": (20.0, 20.0, 2.0, 0.25),
}


def _deim(size: str, family: str = "deim") -> dict[str, Any]:
    """DEIM-D-FINE or RT-DETRv4 (`family` "rtv4"): the same values over the D-FINE config,
    RT-DETRv4 adding its distillation settings."""
    recipe = _dense_o2o(dict(_dfine(size), **_DEIM), *_DEIM_SIZES[size],
                        config=f"{family}/{family}_hgnetv2_{size}_coco.yml")
    if family == "rtv4":
        recipe.update(zip(("distill_weight", "distill_default_weight", "gam_rho", "gam_delta"), _RTV4_DISTILL[size]))
    if size == "n":  # DEIM-N keeps D-FINE-N's lr_gamma 1 (and has no multi-scale)
        recipe["lr_gamma"] = 1.0
    return recipe


# `base/rtv2_optimizer.yml` + `base/dataloader.yml` + `base/rtv2_r50vd.yml` + `base/rtv2_deim.yml`
_RTV2 = dict(_DFINE, warmup_steps=2000, ema_warmups=2000, total_batch_size=16, losses=("mal", "boxes"),
             loss_weights=DEIM_RTV2_WEIGHTS, loss_gamma=1.5, loss_union_set=False, lr_gamma=0.5,
             weight_decay=1e-4, scales=official_scales(3), ema_restart_decay=0.9999)

# variant: config, epochs, backbone lr (None: no backbone group), flat_epoch, no_aug_epoch, policy
_DEIM_RTV2: dict[str, tuple] = {
    "r18vd": ("r18vd_120e", 120, None, 64, 3, (4, 64, 117)),
    "r34vd": ("r34vd_120e", 120, 1e-4, 64, 3, (4, 64, 117)),
    "r50vd_m": ("r50vd_m_60e", 60, 2e-5, 34, 2, (4, 34, 58)),
    "r50vd": ("r50vd_60e", 60, 2e-5, 34, 2, (4, 34, 58)),
    "r101vd": ("r101vd_60e", 60, 2e-6, 34, 2, (4, 34, 58)),
}


def _deim_rtv2(variant: str) -> dict[str, Any]:
    config, epochs, backbone_lr, flat, no_aug, policy = _DEIM_RTV2[variant]
    recipe = _dense_o2o(_RTV2, epochs, 2e-4, 1e-4, deim_rtv2_groups(backbone_lr), flat, no_aug, policy,
                        config=f"deim/deim_rtv2_{config}_coco.yml")
    if variant == "r18vd":  # `scales: ~` (see the module docstring)
        recipe["scales"] = None
    return recipe


RECIPE_VALUES: dict[str, dict[str, Any]] = {
    **{f"dfine_hgnetv2_{s}": _dfine(s) for s in "nsmlx"},
    **{f"deim_hgnetv2_{s}": _deim(s) for s in "nsmlx"},
    **{f"deim_rtv2_{v}": _deim_rtv2(v) for v in _DEIM_RTV2},
    **{f"rtv4_hgnetv2_{s}": _deim(s, "rtv4") for s in "smlx"},
}
