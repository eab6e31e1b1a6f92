"""The D-FINE, DEIM and RT-DETRv4 recipes against the official configs (RT-DETRv4 repository,
`configs/{dfine,deim,rtv4}/` and their `base/` includes, read by hand), and their parameter
groups on the real models against the regexes' meaning written out as plain substring rules.

Models are built on the meta device: only parameter names and `requires_grad` matter here.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import yaml

import rtdetr
from rtdetr.data import make_synthetic_dataset
from rtdetr.train.config import TrainConfig
from rtdetr.train.recipes import build_param_groups, get_recipe
from rtdetr.train.resolve import args_yaml, resolve
from rtdetr.train.trainer import Trainer

DFINE = [f"dfine_hgnetv2_{s}" for s in "nsmlx"]
DEIM = [f"deim_hgnetv2_{s}" for s in "nsmlx"]
RTV4 = [f"rtv4_hgnetv2_{s}" for s in "smlx"]
DEIM_RTV2 = [f"deim_rtv2_{v}" for v in ("r18vd", "r34vd", "r50vd_m", "r50vd", "r101vd")]
ALL = DFINE + DEIM + RTV4 + DEIM_RTV2

# The multi-scale list of the D-FINE collate function for base_size_repeat r, written out.
LOW, HIGH = (480, 512, 544, 576, 608), (800, 768, 736, 704, 672)

# name: epochs, lr, backbone lr (None: no backbone group), weight decay, total batch, warm-up
# iterations, lr_gamma, flat_epoch, no_aug_epoch, base_size_repeat (None: no multi-scale),
# collate stop epoch, policy (e0, e1, e2) (D-FINE: its int epoch), ema_restart_decay, config.
OFFICIAL = {
    "dfine_hgnetv2_n": (160, 8e-4, 4e-4, 1e-4, 128, 500, 1, 4000000, 0, None, 148, 148, 0.9999),
    "dfine_hgnetv2_s": (132, 2e-4, 1e-4, 1e-4, 32, 500, 1, 4000000, 0, 20, 120, 120, 0.9999),
    "dfine_hgnetv2_m": (132, 2e-4, 2e-5, 1e-4, 32, 500, 1, 4000000, 0, 6, 120, 120, 0.9999),
    "dfine_hgnetv2_l": (80, 2.5e-4, 1.25e-5, 1.25e-4, 32, 500, 1, 4000000, 0, 4, 72, 72, 0.9999),
    "dfine_hgnetv2_x": (80, 2.5e-4, 2.5e-6, 1.25e-4, 32, 500, 1, 4000000, 0, 3, 72, 72, 0.9998),
    "deim_hgnetv2_n": (160, 8e-4, 4e-4, 1e-4, 128, 2000, 1, 7800, 12, None, 148, (4, 78, 148), 0.9999),
    "deim_hgnetv2_s": (132, 4e-4, 2e-4, 1e-4, 32, 2000, 0.5, 64, 12, 20, 120, (4, 64, 120), 0.9999),
    "deim_hgnetv2_m": (102, 4e-4, 4e-5, 1e-4, 32, 2000, 0.5, 49, 12, 6, 90, (4, 49, 90), 0.9999),
    "deim_hgnetv2_l": (58, 5e-4, 2.5e-5, 1.25e-4, 32, 2000, 0.5, 29, 8, 4, 50, (4, 29, 50), 0.9999),
    "deim_hgnetv2_x": (58, 5e-4, 5e-6, 1.25e-4, 32, 2000, 0.5, 29, 8, 3, 50, (4, 29, 50), 0.9998),
    "rtv4_hgnetv2_s": (132, 4e-4, 2e-4, 1e-4, 32, 2000, 0.5, 64, 12, 20, 120, (4, 64, 120), 0.9999),
    "rtv4_hgnetv2_m": (102, 4e-4, 4e-5, 1e-4, 32, 2000, 0.5, 49, 12, 6, 90, (4, 49, 90), 0.9999),
    "rtv4_hgnetv2_l": (58, 5e-4, 2.5e-5, 1.25e-4, 32, 2000, 0.5, 29, 8, 4, 50, (4, 29, 50), 0.9999),
    "rtv4_hgnetv2_x": (58, 5e-4, 5e-6, 1.25e-4, 32, 2000, 0.5, 29, 8, 3, 50, (4, 29, 50), 0.9998),
    # r18 sets `collate_fn.scales: ~` (taken as: no multi-scale)
    "deim_rtv2_r18vd": (120, 2e-4, None, 1e-4, 16, 2000, 0.5, 64, 3, None, 117, (4, 64, 117), 0.9999),
    "deim_rtv2_r34vd": (120, 2e-4, 1e-4, 1e-4, 16, 2000, 0.5, 64, 3, 3, 117, (4, 64, 117), 0.9999),
    "deim_rtv2_r50vd_m": (60, 2e-4, 2e-5, 1e-4, 16, 2000, 0.5, 34, 2, 3, 58, (4, 34, 58), 0.9999),
    "deim_rtv2_r50vd": (60, 2e-4, 2e-5, 1e-4, 16, 2000, 0.5, 34, 2, 3, 58, (4, 34, 58), 0.9999),
    "deim_rtv2_r101vd": (60, 2e-4, 2e-6, 1e-4, 16, 2000, 0.5, 34, 2, 3, 58, (4, 34, 58), 0.9999),
}
CONFIG_FILES = {
    **{f"dfine_hgnetv2_{s}": f"dfine/dfine_hgnetv2_{s}_coco.yml" for s in "nsmlx"},
    **{f"deim_hgnetv2_{s}": f"deim/deim_hgnetv2_{s}_coco.yml" for s in "nsmlx"},
    **{f"rtv4_hgnetv2_{s}": f"rtv4/rtv4_hgnetv2_{s}_coco.yml" for s in "smlx"},
    "deim_rtv2_r18vd": "deim/deim_rtv2_r18vd_120e_coco.yml", "deim_rtv2_r34vd": "deim/deim_rtv2_r34vd_120e_coco.yml",
    "deim_rtv2_r50vd_m": "deim/deim_rtv2_r50vd_m_60e_coco.yml", "deim_rtv2_r50vd": "deim/deim_rtv2_r50vd_60e_coco.yml",
    "deim_rtv2_r101vd": "deim/deim_rtv2_r101vd_60e_coco.yml",
}
# base/dfine_hgnetv2.yml, base/deim.yml (= base/rtv4.yml without distillation), base/rtv2_deim.yml
DFINE_LOSS = (("vfl", "boxes", "local"), {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15,
                                          "loss_ddf": 1.5}, 2.0, True)
DEIM_LOSS = (("mal", "boxes", "local"), {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15,
                                         "loss_ddf": 1.5}, 1.5, True)
DEIM_RTV2_LOSS = (("mal", "boxes"), {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2}, 1.5, False)


def backbone_lr(recipe) -> float | None:
    for regex, overrides in recipe.param_groups:
        if "backbone" in regex and "lr" in overrides:
            return overrides["lr"]
    return None


def test_every_new_zoo_name_has_its_recipe():
    assert set(ALL) <= set(rtdetr.list_models()) and len(ALL) == 19


@pytest.mark.parametrize("name", ALL)
def test_recipe_matches_official_config(name):
    r = get_recipe(name)
    (epochs, lr, bb_lr, wd, batch, warmup, lr_gamma, flat, no_aug, repeat, stop, policy,
     restart) = OFFICIAL[name]
    assert (r.epochs, r.lr, backbone_lr(r), r.weight_decay, r.total_batch_size) == (epochs, lr, bb_lr, wd, batch)
    assert (r.lr_scheduler, r.warmup_shape, r.warmup_steps) == ("flatcosine", "quadratic", warmup)
    assert (r.lr_gamma, r.flat_epoch, r.no_aug_epoch) == (lr_gamma, flat, no_aug)
    assert r.scales == (None if repeat is None else LOW + (640,) * repeat + HIGH)
    assert r.scales_stop_epoch == stop and r.ema_restart_epoch == stop
    assert r.ema_restart_decay == restart
    if isinstance(policy, int):  # D-FINE: one stop epoch, no Mosaic, no MixUp
        assert (r.aug_stop_epoch, r.mosaic_epochs, r.mixup_epochs) == (policy, None, None)
    else:
        e0, e1, e2 = policy
        assert (r.mosaic_epochs, r.aug_stop_epoch, r.mixup_epochs) == ((e0, e1), e2, (e0, e1))
        assert (r.mosaic_prob, r.mixup_prob) == (0.5, 0.5)
    assert r.config == CONFIG_FILES[name]
    assert r.config_url == "https://github.com/RT-DETRs/RT-DETRv4/tree/main/configs/" + CONFIG_FILES[name]


@pytest.mark.parametrize("name", ALL)
def test_shared_values(name):
    r = get_recipe(name)
    rtv2 = name.startswith("deim_rtv2")
    assert (r.betas, r.clip_max_norm, r.eval_size, r.use_amp, r.pretrained_backbone) == ((0.9, 0.999), 0.1, 640,
                                                                                         True, True)
    assert (r.ema_decay, r.ema_warmups) == (0.9999, 2000 if rtv2 else 1000)
    losses = DFINE_LOSS if name.startswith("dfine") else DEIM_RTV2_LOSS if rtv2 else DEIM_LOSS
    assert (r.losses, r.loss_weights, r.loss_gamma, r.loss_union_set) == losses
    assert r.tuning is None and r.param_names == "v2"


def test_the_existing_recipes_are_unchanged_by_the_new_fields():
    r = get_recipe("rtdetrv2_r50vd")
    assert (r.lr_scheduler, r.warmup_shape, r.flat_epoch, r.no_aug_epoch) == ("multistep", "linear", 0, 0)
    assert (r.loss_weights, r.loss_gamma, r.loss_union_set) == ({"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2},
                                                                2.0, False)
    assert (r.mosaic_epochs, r.mosaic_prob, r.mixup_epochs, r.mixup_prob) == (None, 0.0, None, 0.0)
    assert r.ema_restart_decay is None and r.ema_restart_epoch is None
    assert r.config_url == "https://github.com/lyuwenyu/RT-DETR/tree/main/rtdetrv2_pytorch/configs/" + r.config


# --- parameter groups on the real models --------------------------------------------------------

@lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return rtdetr.create_model(name)


def group_names(model, groups) -> list[set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [{name_of[id(p)] for p in g["params"]} for g in groups]


def has(name: str, *words: str) -> bool:
    return any(w in name for w in words)


def expected_groups(name: str, trainable: set[str]) -> list[set[str]]:
    """What each configured regex selects, written as substring rules (every name here starts
    with backbone/encoder/decoder, so none starts with "bn": `(?!.*norm|bn)` only excludes "norm")."""
    bb = {n for n in trainable if has(n, "backbone")}
    head = {n for n in trainable if has(n, "encoder", "decoder")}
    size = name[-1]
    if name in ("dfine_hgnetv2_n", "dfine_hgnetv2_s", "dfine_hgnetv2_m", "deim_hgnetv2_n"):
        return [{n for n in bb if "norm" not in n}, {n for n in bb if "norm" in n},
                {n for n in head if has(n, "norm", "bn", "bias")}]
    if name.startswith(("dfine", "deim_hgnetv2", "rtv4")) and size in "lx":
        return [{n for n in bb if "norm" not in n}, {n for n in head if has(n, "norm", "bn")}]
    if name.startswith(("deim_hgnetv2", "rtv4")):  # S, M
        return [{n for n in bb if "bn" not in n}, {n for n in trainable if has(n, "norm", "bn")}]
    if name == "deim_rtv2_r18vd":
        return [{n for n in trainable if has(n, "norm", "bn")}]
    return [{n for n in bb if "norm" not in n}, {n for n in trainable if has(n, "norm", "bn")}]


@pytest.mark.parametrize("name", ALL)
def test_groups_assign_parameters_as_the_official_regexes_do(name):
    model, recipe = meta_model(name), get_recipe(name)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    groups = build_param_groups(model, recipe)
    names = group_names(model, groups)
    expected = expected_groups(name, trainable)
    rest = trainable - set().union(*expected)
    assert names == expected + ([rest] if rest else [])
    assert sum(len(s) for s in names) == len(trainable)       # each trainable parameter once
    # the overrides, in the config's order
    assert [{k: v for k, v in g.items() if k != "params"} for g in groups[:len(expected)]] == \
        [o for _, o in recipe.param_groups]


def test_the_regex_pitfall_as_configured():
    """DEIM-L: `(?!.*norm|bn)` takes HGNetv2's `.bn.` into the backbone group (backbone lr, weight
    decay kept); DEIM-S's `(?!.*bn)` leaves them to the zero-decay group at the base lr; D-FINE-S's
    backbone-norm group stays empty; D-FINE-L's batch norms are frozen (no parameters at all)."""
    bn = "backbone.stem.stem1.bn.weight"
    deim_l = build_param_groups(meta_model("deim_hgnetv2_l"), get_recipe("deim_hgnetv2_l"))
    names = group_names(meta_model("deim_hgnetv2_l"), deim_l)
    assert bn in names[0] and deim_l[0] == {"params": deim_l[0]["params"], "lr": 2.5e-5}
    deim_s = build_param_groups(meta_model("deim_hgnetv2_s"), get_recipe("deim_hgnetv2_s"))
    names = group_names(meta_model("deim_hgnetv2_s"), deim_s)
    assert bn in names[1] and deim_s[1]["weight_decay"] == 0.0 and "lr" not in deim_s[1]
    assert "backbone.stem.stem1.conv.weight" in names[0]
    dfine_s = build_param_groups(meta_model("dfine_hgnetv2_s"), get_recipe("dfine_hgnetv2_s"))
    assert dfine_s[1]["params"] == [] and len(dfine_s) == 4
    assert not any(".bn." in n for n, _ in meta_model("dfine_hgnetv2_l").named_parameters())


# --- the effective configuration and the run's pieces -------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=3, num_train=4, num_val=2,
                                  image_size=(64, 64))


def test_args_yaml_shows_the_new_fields_and_round_trips():
    resolved = resolve(TrainConfig(data="d", model="deim_hgnetv2_s"))
    cfg = resolved.config
    assert (cfg.lr_schedule, cfg.warmup_shape, cfg.lr_gamma, cfg.flat_epoch, cfg.no_aug_epoch) == \
        ("flatcosine", "quadratic", 0.5, 64, 12)
    assert (cfg.mosaic_epochs, cfg.mosaic_prob, cfg.mixup_epochs, cfg.mixup_prob) == ((4, 64), 0.5, (4, 64), 0.5)
    assert (cfg.ema_restart_epoch, cfg.ema_restart_decay, cfg.ema_warmups) == (120, 0.9999, 1000)
    assert (cfg.losses, cfg.loss_gamma, cfg.loss_union_set) == (("mal", "boxes", "local"), 1.5, True)
    text = args_yaml(resolved)
    assert TrainConfig.from_kwargs(**yaml.safe_load(text)) == cfg
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert lines["mosaic_epochs"] == "mosaic_epochs: [4, 64]  # recipe"
    assert lines["loss_weights"] == ("loss_weights: {loss_mal: 1.0, loss_bbox: 5.0, loss_giou: 2.0, loss_fgl: 0.15, "
                                     "loss_ddf: 1.5}  # recipe")


def test_command_line_strings_for_the_new_fields():
    cfg = TrainConfig.from_kwargs(data="d", mosaic_epochs="2,5", mixup_epochs=[1, 3],
                                  loss_weights="loss_vfl=1,loss_bbox=5,loss_giou=2")
    assert (cfg.mosaic_epochs, cfg.mixup_epochs) == ((2, 5), (1, 3))
    assert cfg.loss_weights == {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    with pytest.raises(ValueError, match=r"mosaic_epochs must be two epochs \(start, end\), got '4'"):
        TrainConfig.from_kwargs(data="d", mosaic_epochs="4")


def test_options_the_run_cannot_follow_are_one_line_errors():
    with pytest.raises(ValueError, match="^lr_schedule 'flat': use one of multistep, cosine, flatcosine$"):
        resolve(TrainConfig(data="d", lr_schedule="flat"))
    with pytest.raises(ValueError, match=r"give term\(s\) loss_fgl, loss_ddf without a weight"):
        resolve(TrainConfig(data="d", model="rtdetrv2_r18vd", losses=("vfl", "boxes", "local")))
    with pytest.raises(ValueError, match=r"mixup_epochs \(5, 2\): need 0 <= start <= end"):
        resolve(TrainConfig(data="d", mixup_epochs=(5, 2)))


def test_the_run_builds_its_pieces_from_the_recipe(data, tmp_path):
    # No ImageNet backbone: the recipe asks for one, which would be a download (tested in test_pretrained).
    trainer = Trainer(TrainConfig(data=str(data), model="deim_hgnetv2_s", batch=2, imgsz=(64, 64), workers=0,
                                  pretrained_backbone=False, project=str(tmp_path), name="run"))
    trainer.setup()
    s = trainer.schedule
    assert (s.kind, s.warmup_shape, s.warmup_steps, s.gamma, s.flat_epochs, s.no_aug_epochs, s.epochs) == \
        ("flatcosine", "quadratic", 2000, 0.5, 64, 12, 132)
    c = trainer.criterion
    assert (c.losses, c.gamma, c.use_union_set) == (("mal", "boxes", "local"), 1.5, True)
    assert c.weight_dict == {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15, "loss_ddf": 1.5}
    compose = trainer.train_set.transforms.transforms
    assert (compose.mosaic_epochs, compose.mosaic_prob, compose.stop_epoch) == ((4, 64), 0.5, 120)
    assert compose.ops[0].source is trainer.train_set               # Mosaic draws from the training set
    assert (trainer.collate.mixup_epochs, trainer.collate.mixup_prob, trainer.collate.stop_epoch) == ((4, 64), 0.5, 120)
    assert trainer.ema.warmups == 1000 and trainer.cfg.ema_restart_epoch == 120
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == [2e-4, 4e-4]                                      # backbone, base


@pytest.mark.parametrize("size, weight, default, rho, delta", [
    # rtv4/rtv4_hgnetv2_{s,m,l,x}_coco.yml: weight_dict.loss_distill, distill_adaptive_params.
    ("s", 5.0, 20.0, 11.0, 1.0), ("m", 5.0, 15.0, 3.5, 0.25), ("l", 15.0, 15.0, 2.0, 0.1), ("x", 20.0, 20.0, 2.0, 0.25),
])
def test_rtv4_recipes_carry_the_official_distillation_settings(size, weight, default, rho, delta):
    r = get_recipe(f"rtv4_hgnetv2_{size}")
    assert (r.distill_weight, r.distill_default_weight, r.gam_rho, r.gam_delta) == (weight, default, rho, delta)
    # GAM's stage 2 (the default weight) starts at the collate stop epoch, where multi-scale stops.
    assert r.scales_stop_epoch == {"s": 120, "m": 90, "l": 50, "x": 50}[size]
