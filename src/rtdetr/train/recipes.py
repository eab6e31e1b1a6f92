"""Every official COCO training recipe, by zoo name, and the AdamW parameter groups it asks for.

The D-FINE, DEIM and RT-DETRv4 recipes are in `recipes_dfine` (from the RT-DETRv4 repository's
configs); the rest of this docstring is about RT-DETR and RT-DETRv2. Their values are read from
the official RT-DETRv2 repository (`rtdetrv2_pytorch/configs/`):
each `rtdetrv2/*.yml` includes `../dataset/coco_detection.yml`, `../runtime.yml`,
`include/dataloader.yml`, `include/optimizer.yml` and `include/rtdetrv2_r50vd.yml`, in that
order, and then overrides keys of its own (dicts merge key by key, lists are replaced whole).
The v1 models (`rtdetr_*`) use the v1 configs that live in the same repository,
`configs/rtdetr/*.yml`, which include `configs/rtdetr/include/*` instead.

Shared by every recipe (the defaults of `TrainRecipe`):
- AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 1e-4, gradients clipped to norm 0.1;
- linear warm-up over the first 2000 steps, then MultiStepLR(milestones=[1000], gamma=0.1)
  stepped per epoch, which never fires: the learning rate is constant after warm-up;
- EMA of the weights, decay 0.9999 with 2000 warm-up updates;
- 16 images per step in total (4 GPUs x 4), evaluation at 640 x 640;
- the losses ['vfl', 'boxes'] (weights 1, 5, 2: `criterion.DEFAULT_WEIGHTS`);
- an ImageNet-pretrained backbone (`pretrained: True`; the files: `rtdetr.models.pretrained`).

What varies (see `RECIPES`): the epochs, the parameter groups (the backbone learning rate and
which parameters skip weight decay), the epoch at which the strong augmentations stop
(`RandomPhotometricDistort`, `RandomZoomOut`, `RandomIoUCrop`), and multi-scale training.

Where the v1 configs (`configs/rtdetr/`) differ from the v2 ones:
- no `use_amp` key, so it stays False from `runtime.yml` (v2's `optimizer.yml` sets True);
- no augmentation stop policy and no multi-scale `stop_epoch`: both run for all 72 epochs;
- their own parameter groups (backbone lr 1e-5, or 1e-6 for r101; biases of the encoder and
  decoder skip weight decay except for r101);
- their models name a few parameters differently, which changes what the regexes match
  (see `TrainRecipe.param_names` and `official_name`);
- the validation batch is 16 images instead of 32 (not a field here).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from rtdetr.train import recipes_dfine
from rtdetr.models.zoo import SEGMENT_BASES

CONFIGS = "https://github.com/lyuwenyu/RT-DETR/tree/main/rtdetrv2_pytorch/configs/"
RELEASES = "https://github.com/lyuwenyu/storage/releases/download/v0.1/"

# The official multi-scale sizes: one is drawn per batch (640 three times as often).
MULTI_SCALES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
# The augmentations the official stop-epoch policy switches off.
AUG_STOP_OPS = ("RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop")

ParamGroup = tuple[str, dict[str, float]]


@dataclass(frozen=True)
class TrainRecipe:
    """One official training recipe.

    `param_groups`: (regex, overrides) in the config's order. A trainable parameter whose
    name the regex finds (`re.search`) goes to that group, with those AdamW settings
    overriding the recipe's `lr` / `weight_decay`; the others form a last, default group.
    `param_names`: which official names the regexes were written against. The v1 configs'
    models call `encoder.input_proj.N.conv/norm` and `decoder.enc_output.proj/norm` by
    `.0/.1`, so e.g. those layer-norm and batch-norm weights do not contain "norm" there
    and keep their weight decay. "v2" names are this library's own.
    `aug_stop_epoch`: from this epoch on the strong augmentations (`AUG_STOP_OPS`) are
    skipped; None: never (the v1 configs have no policy).
    `scales`: batch sizes drawn for multi-scale training (the whole batch is resized with
    nearest interpolation) until `scales_stop_epoch` (None: never stops); `scales` None:
    no multi-scale at all. The r18 v2 configs set `scales: ~` but keep the inherited
    `stop_epoch: 71`, which then does nothing; it is kept here as configured.
    `use_amp`: as the official configs set it. Official `tools/train.py` overrides it with
    its `--use-amp` flag (default off), so the published runs used AMP only if asked for.
    `losses`: the criterion's losses by name (`criterion.LOSSES`).
    `pretrained_backbone`: the backbone starts from its ImageNet-pretrained file.
    `tuning`: the checkpoint the recipe fine-tunes from (the discrete-sampling configs start
    from the matching grid-sample model), else None.
    `config`: the official config file, relative to `config_root` ("" for a recipe of your own);
    `config_root`: `CONFIGS` (RT-DETR / RT-DETRv2) or `recipes_dfine.V4_CONFIGS` (D-FINE, DEIM,
    RT-DETRv4).

    The fields below were added for the D-FINE family (`recipes_dfine`); their defaults are
    what the RT-DETR / RT-DETRv2 recipes do.
    `lr_scheduler`: "multistep" (warm-up, then `lr_gamma` at each of `lr_milestones`) or
    "flatcosine" (warm-up, flat until `flat_epoch`, a half cosine down to `lr_gamma` x lr at
    `epochs - no_aug_epoch`, then constant); see `schedule.LRSchedule`.
    `warmup_shape`: "linear" (RT-DETR) or "quadratic" (the flat-cosine configs: lr (t/W)^2).
    `loss_weights`: the criterion's weight of each term by name (`weight_dict`);
    `loss_gamma`: the focusing exponent of the classification loss (VFL 2, MAL 1.5);
    `loss_union_set`: box and local terms on the union of all levels' matched pairs
    (`RTDETRCriterion(use_union_set=...)`; the D-FINE criterion's `use_uni_set`).
    `mosaic_epochs`: (e0, e1) of DEIM's three-phase policy [e0, e1, e2], e2 being
    `aug_stop_epoch`: before e0 none of Mosaic and the strong augmentations; in [e0, e1)
    Mosaic with probability `mosaic_prob` (and no zoom-out / IoU crop on mosaic samples);
    in [e1, e2) the plain augmentation; from e2 on none. None: no Mosaic, and the strong
    augmentations run from the first epoch (the v2 stop policy).
    `mixup_epochs`: [start, end) epochs of the collate's MixUp, with probability `mixup_prob`
    (None: none).
    `ema_restart_decay`: the EMA restarts ("stage 2"); None: none. At epoch
    `scales_stop_epoch` (the official collate `stop_epoch`) the run reloads the best state of
    the epochs before it (model, EMA, optimizer) and continues with EMA decay
    `ema_restart_decay`; after each later validated epoch that is not a new best it reloads
    that state again and lowers the decay by 1e-4. Officially both decay changes are no-ops:
    the EMA's decay function captured the constructor's decay, so only the reloads acted.
    Here the decay really changes, as the configs and the code's own messages mean it to:
    stage 2 is a search over the EMA decay (each retry of the best stage-1 state averages
    more briefly), which an unchanged decay would not search. So runs of these recipes
    differ from the published ones from `scales_stop_epoch` on (X: decay 0.9998 there).

    Distillation (`rtdetr.train.distill`, used when a run has a teacher): `distill_weight`, the
    initial lambda; `distill_default_weight`, GAM's fallback lambda; `gam_rho`, `gam_delta`, the
    band of AIFI's gradient share in % (`rtdetr.train.gam`). The defaults are RT-DETRv4-S's; the
    RT-DETRv4 recipes carry their own per size. For another architecture or data set the band is
    best measured: `rtdetr tune-distill`.

    Segmentation (a model with a mask head): `mask_weights`, the weights of the mask BCE and
    Dice terms, in the loss and in the matching cost alike: D-FINE-seg's 1 and 1, whose
    box-cropped losses ours follow (no official RT-DETR recipe has masks). RF-DETR-Seg's 5 and 5
    (uncropped losses) slowed the boxes on the demo: box AP50 0.30 against 0.54 at the 3rd epoch,
    mask AP50 0.30 against 0.55 (benchmarks/seg_weights.py: runs of 5 epochs at 224).
    """

    epochs: int = 72
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    param_groups: tuple[ParamGroup, ...] = ()
    param_names: str = "v2"
    warmup_steps: int = 2000
    lr_milestones: tuple[int, ...] = (1000,)
    lr_gamma: float = 0.1
    ema_decay: float = 0.9999
    ema_warmups: int = 2000
    clip_max_norm: float = 0.1
    total_batch_size: int = 16
    aug_stop_epoch: int | None = 71
    scales: tuple[int, ...] | None = MULTI_SCALES
    scales_stop_epoch: int | None = 71
    eval_size: int = 640
    use_amp: bool = True
    losses: tuple[str, ...] = ("vfl", "boxes")
    pretrained_backbone: bool = True
    tuning: str | None = None
    config: str = ""
    config_root: str = CONFIGS
    lr_scheduler: str = "multistep"
    warmup_shape: str = "linear"
    flat_epoch: int = 0
    no_aug_epoch: int = 0
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0})
    loss_gamma: float = 2.0
    loss_union_set: bool = False
    mosaic_epochs: tuple[int, int] | None = None
    mosaic_prob: float = 0.0
    mixup_epochs: tuple[int, int] | None = None
    mixup_prob: float = 0.0
    ema_restart_decay: float | None = None
    distill_weight: float = 5.0
    distill_default_weight: float = 20.0
    gam_rho: float = 11.0
    gam_delta: float = 1.0
    mask_weights: tuple[float, float] = (1.0, 1.0)

    @property
    def config_url(self) -> str:
        """The official config file's address ("" for a recipe of your own)."""
        return self.config_root + self.config if self.config else ""

    @property
    def ema_restart_epoch(self) -> int | None:
        """The epoch of the first EMA restart (None: no restarts)."""
        return self.scales_stop_epoch if self.ema_restart_decay is not None else None


# ---------------------------------------------------------------------------------------------
# The parameter groups, copied verbatim from the configs (regex, then AdamW overrides).
#
# Precedence matters in some of them: in `(?!.*norm|bn)` the alternation binds loosest, so it
# reads "not (contains 'norm' or starts with 'bn')", and a name starting with "backbone" never
# starts with "bn": in effect these regexes only look for "norm". Harmless for the released
# models: PResNet names its batch norms "norm", and HGNetv2's "bn" layers are frozen.
# ---------------------------------------------------------------------------------------------

NO_DECAY = {"weight_decay": 0.0}

# v2 include/optimizer.yml (and restated by r50vd, r50vd_m, r50vd_m_dsp; inherited by r50vd_dsp).
V2_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?!.*norm).*$", {"lr": 1e-5}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", NO_DECAY),
)
# v2 r18 (120e, sp1/2/3, dsp): every norm, anywhere, skips weight decay; the backbone keeps lr 1e-4.
V2_R18_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*(?:norm|bn)).*$", NO_DECAY),
)
# v2 r34 (120e, dsp): backbone at 5e-5, its norms without decay; encoder/decoder biases too.
V2_R34_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 5e-5}),
    (r"^(?=.*backbone)(?=.*norm|bn).*$", {"lr": 5e-5, "weight_decay": 0.0}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", NO_DECAY),
)


def _frozen_backbone_groups(backbone_lr: float) -> tuple[ParamGroup, ...]:
    """r101 and HGNetv2 (v2 dir): a slower backbone, encoder/decoder norms without decay."""
    return (
        (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": backbone_lr}),
        (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", NO_DECAY),
    )


# v1 include/optimizer.yml (used as is by rtdetr_r50vd; its backbone-norm group stays empty
# because r50 freezes its batch norms).
V1_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?!.*(?:norm|bn)).*$", {"lr": 1e-5}),
    (r"^(?=.*backbone)(?=.*(?:norm|bn)).*$", {"weight_decay": 0.0, "lr": 1e-5}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", NO_DECAY),
)
# v1 r18 and r34: the same three groups, norm group first.
V1_R18_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?=.*norm|bn).*$", {"weight_decay": 0.0, "lr": 1e-5}),
    (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 1e-5}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", NO_DECAY),
)
V1_R50M_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 1e-5}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", NO_DECAY),
)
V1_R101_GROUPS: tuple[ParamGroup, ...] = (
    (r"^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 1e-6}),
    (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", NO_DECAY),
)


def _v1(config: str, groups: tuple[ParamGroup, ...]) -> TrainRecipe:
    """A `configs/rtdetr/` recipe: 72 epochs, no AMP, augmentation and multi-scale never stop."""
    return TrainRecipe(config="rtdetr/" + config, param_groups=groups, param_names="v1",
                       aug_stop_epoch=None, scales_stop_epoch=None, use_amp=False)


def _v2(config: str, groups: tuple[ParamGroup, ...], epochs: int = 72, stop: int = 71,
        multi_scale: bool = True, tuning: str | None = None) -> TrainRecipe:
    """A `configs/rtdetrv2/` recipe. Without multi-scale the collate stop epoch stays at the inherited 71."""
    return TrainRecipe(
        config="rtdetrv2/" + config, epochs=epochs, param_groups=groups, aug_stop_epoch=stop,
        scales=MULTI_SCALES if multi_scale else None, scales_stop_epoch=stop if multi_scale else 71,
        tuning=RELEASES + tuning if tuning else None,
    )


RECIPES: dict[str, TrainRecipe] = {
    # RT-DETR (v1), configs/rtdetr/
    "rtdetr_r18vd": _v1("rtdetr_r18vd_6x_coco.yml", V1_R18_GROUPS),
    "rtdetr_r34vd": _v1("rtdetr_r34vd_6x_coco.yml", V1_R18_GROUPS),
    "rtdetr_r50vd_m": _v1("rtdetr_r50vd_m_6x_coco.yml", V1_R50M_GROUPS),
    "rtdetr_r50vd": _v1("rtdetr_r50vd_6x_coco.yml", V1_GROUPS),
    "rtdetr_r101vd": _v1("rtdetr_r101vd_6x_coco.yml", V1_R101_GROUPS),
    # RT-DETRv2, configs/rtdetrv2/
    "rtdetrv2_r18vd": _v2("rtdetrv2_r18vd_120e_coco.yml", V2_R18_GROUPS, 120, 117, multi_scale=False),
    "rtdetrv2_r34vd": _v2("rtdetrv2_r34vd_120e_coco.yml", V2_R34_GROUPS, 120, 117),
    "rtdetrv2_r50vd_m": _v2("rtdetrv2_r50vd_m_7x_coco.yml", V2_GROUPS, 84, 81),
    "rtdetrv2_r50vd": _v2("rtdetrv2_r50vd_6x_coco.yml", V2_GROUPS),
    "rtdetrv2_r101vd": _v2("rtdetrv2_r101vd_6x_coco.yml", _frozen_backbone_groups(1e-6)),
    "rtdetrv2_hgnetv2_l": _v2("rtdetrv2_hgnetv2_l_6x_coco.yml", _frozen_backbone_groups(5e-6)),
    "rtdetrv2_hgnetv2_x": _v2("rtdetrv2_hgnetv2_x_6x_coco.yml", _frozen_backbone_groups(1e-6)),
    "rtdetrv2_hgnetv2_h": _v2("rtdetrv2_hgnetv2_h_6x_coco.yml", _frozen_backbone_groups(5e-6)),
    # fewer sampling points: the r18 recipe
    "rtdetrv2_r18vd_sp1": _v2("rtdetrv2_r18vd_sp1_120e_coco.yml", V2_R18_GROUPS, 120, 117, multi_scale=False),
    "rtdetrv2_r18vd_sp2": _v2("rtdetrv2_r18vd_sp2_120e_coco.yml", V2_R18_GROUPS, 120, 117, multi_scale=False),
    "rtdetrv2_r18vd_sp3": _v2("rtdetrv2_r18vd_sp3_120e_coco.yml", V2_R18_GROUPS, 120, 117, multi_scale=False),
    # discrete sampling: short fine-tunes of the grid-sample models
    "rtdetrv2_r18vd_dsp": _v2("rtdetrv2_r18vd_dsp_3x_coco.yml", V2_R18_GROUPS, 36, 33, multi_scale=False,
                              tuning="rtdetrv2_r18vd_120e_coco.pth"),
    "rtdetrv2_r34vd_dsp": _v2("rtdetrv2_r34vd_dsp_1x_coco.yml", V2_R34_GROUPS, 12, 10,
                              tuning="rtdetrv2_r34vd_120e_coco_ema.pth"),
    "rtdetrv2_r50vd_m_dsp": _v2("rtdetrv2_r50vd_m_dsp_3x_coco.yml", V2_GROUPS, 36, 33,
                                tuning="rtdetrv2_r50vd_m_7x_coco_ema.pth"),
    "rtdetrv2_r50vd_dsp": _v2("rtdetrv2_r50vd_dsp_1x_coco.yml", V2_GROUPS, 12, 10,
                              tuning="rtdetrv2_r50vd_6x_coco_ema.pth"),
}


# D-FINE, DEIM (on D-FINE and on RT-DETRv2) and RT-DETRv4, from the RT-DETRv4 repository's configs.
RECIPES.update({name: TrainRecipe(**values) for name, values in recipes_dfine.RECIPE_VALUES.items()})


# Not official: the built-in CPU demo (`rtdetr demo`), tuned to learn the synthetic shapes fast:
# a higher lr, a short warm-up and EMA, no multi-scale, and a random backbone (nothing to download).
RECIPES["demo"] = TrainRecipe(
    epochs=30, lr=4e-4, param_groups=((r"^(?=.*(?:norm|bn)).*$", NO_DECAY),), warmup_steps=50,
    ema_decay=0.999, ema_warmups=100, total_batch_size=8, aug_stop_epoch=None, scales=None,
    scales_stop_epoch=None, eval_size=320, use_amp=False, pretrained_backbone=False,
)


# A segmentation sibling (`<detector>_seg`) trains with its detector's recipe (plus `mask_weights`).
RECIPES.update({f"{base}_seg": RECIPES[base] for base in (*SEGMENT_BASES, "demo") if base in RECIPES})


def get_recipe(name: str) -> TrainRecipe:
    """The official training recipe of a zoo architecture."""
    if name not in RECIPES:
        raise ValueError(f"no training recipe for {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------

# Our names (= official v2) -> the official v1 model's names, for matching the v1 regexes.
TO_V1_NAMES = (
    (re.compile(r"^(encoder\.input_proj\.\d+)\.conv\."), r"\1.0."),
    (re.compile(r"^(encoder\.input_proj\.\d+)\.norm\."), r"\1.1."),
    (re.compile(r"^decoder\.enc_output\.proj\."), "decoder.enc_output.0."),
    (re.compile(r"^decoder\.enc_output\.norm\."), "decoder.enc_output.1."),
)


def official_name(name: str, param_names: str = "v2") -> str:
    """The name the official `param_names` ("v1" or "v2") model gives our parameter `name`."""
    if param_names == "v2":
        return name
    if param_names != "v1":
        raise ValueError(f"param_names must be 'v1' or 'v2', got {param_names!r}")
    for pattern, repl in TO_V1_NAMES:
        name = pattern.sub(repl, name)
    return name


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _check_no_overlap(matches: list[list[str]], regexes: list[str]) -> None:
    """Raise if a parameter is in two groups (the official code asserts on it)."""
    owner: dict[str, str] = {}
    for names, regex in zip(matches, regexes):
        for name in names:
            if name in owner:
                raise ValueError(f"parameter {name!r} is matched by two parameter groups: "
                                 f"{owner[name]!r} and {regex!r}")
            owner[name] = regex


def build_param_groups(model: nn.Module, recipe: TrainRecipe) -> list[dict]:
    """The optimizer's parameter groups, as the official `YAMLConfig.get_optim_params` builds them.

    For each (regex, overrides) of `recipe.param_groups`, in order: every parameter that
    requires grad and whose (official) name the regex finds, in `named_parameters` order,
    with the overrides. A group that matches nothing is kept, empty, so that the groups line
    up with the config (and with official optimizer states). Then one default group of every
    other trainable parameter, if any. Frozen parameters are in no group.

    A parameter matched by two regexes raises ValueError. (The official check compares a
    count; it would let an overlap through when it happens to equal the number of unmatched
    parameters, which then get no group at all.)
    """
    trainable = _trainable(model)
    regexes = [regex for regex, _ in recipe.param_groups]
    matches = [[name for name in trainable if re.search(regex, official_name(name, recipe.param_names))]
               for regex in regexes]
    _check_no_overlap(matches, regexes)

    groups = [{"params": [trainable[n] for n in names], **overrides}
              for names, (_, overrides) in zip(matches, recipe.param_groups)]
    seen = {name for names in matches for name in names}
    rest = [p for name, p in trainable.items() if name not in seen]
    if rest:
        groups.append({"params": rest})
    return groups


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.AdamW:
    """AdamW over `build_param_groups`, with the recipe's lr, betas and weight decay as defaults."""
    return torch.optim.AdamW(build_param_groups(model, recipe), lr=recipe.lr,
                             betas=recipe.betas, weight_decay=recipe.weight_decay)
