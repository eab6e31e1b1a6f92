"""Training recipes against the official configs, and parameter groups against hand-written rules.

Models are built on the meta device: only parameter names and `requires_grad` matter here.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

import rtdetr
from rtdetr.models.weights import normalise_keys
from rtdetr.train.recipes_dfine import RECIPE_VALUES as NEW_FAMILIES
from rtdetr.train.recipes import (MULTI_SCALES, RECIPES, TrainRecipe, build_param_groups, get_recipe,
                                  make_optimizer, official_name)


@lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return rtdetr.create_model(name)


def group_names(model: torch.nn.Module, groups: list[dict]) -> list[set[str]]:
    """Each group's parameter names (groups hold tensors; map them back by identity)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [{name_of[id(p)] for p in g["params"]} for g in groups]


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def backbone_lr(recipe: TrainRecipe) -> float:
    """The lr of the first group about the backbone, else the base lr."""
    for regex, overrides in recipe.param_groups:
        if "backbone" in regex and "lr" in overrides:
            return overrides["lr"]
    return recipe.lr


# --- the recipes -------------------------------------------------------------------------------

def test_every_zoo_name_has_a_recipe():
    assert set(RECIPES) == set(rtdetr.list_models())
    for name in rtdetr.list_models():
        assert get_recipe(name) is RECIPES[name]


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="no training recipe for 'rtdetrv3'"):
        get_recipe("rtdetrv3")


# name: epochs, backbone lr, aug stop epoch, multi-scale (None: off), multi-scale stop epoch.
# Read off the official config files.
OFFICIAL = {
    "rtdetr_r18vd": (72, 1e-5, None, MULTI_SCALES, None),
    "rtdetr_r50vd": (72, 1e-5, None, MULTI_SCALES, None),
    "rtdetr_r101vd": (72, 1e-6, None, MULTI_SCALES, None),
    "rtdetrv2_r18vd": (120, 1e-4, 117, None, 71),
    "rtdetrv2_r18vd_sp2": (120, 1e-4, 117, None, 71),
    "rtdetrv2_r34vd": (120, 5e-5, 117, MULTI_SCALES, 117),
    "rtdetrv2_r50vd_m": (84, 1e-5, 81, MULTI_SCALES, 81),
    "rtdetrv2_r50vd": (72, 1e-5, 71, MULTI_SCALES, 71),
    "rtdetrv2_r101vd": (72, 1e-6, 71, MULTI_SCALES, 71),
    "rtdetrv2_hgnetv2_l": (72, 5e-6, 71, MULTI_SCALES, 71),
    "rtdetrv2_hgnetv2_x": (72, 1e-6, 71, MULTI_SCALES, 71),
    "rtdetrv2_hgnetv2_h": (72, 5e-6, 71, MULTI_SCALES, 71),
    "rtdetrv2_r18vd_dsp": (36, 1e-4, 33, None, 71),
    "rtdetrv2_r34vd_dsp": (12, 5e-5, 10, MULTI_SCALES, 10),
    "rtdetrv2_r50vd_m_dsp": (36, 1e-5, 33, MULTI_SCALES, 33),
    "rtdetrv2_r50vd_dsp": (12, 1e-5, 10, MULTI_SCALES, 10),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_recipe_matches_official_config(name):
    r = get_recipe(name)
    epochs, bb_lr, aug_stop, scales, scales_stop = OFFICIAL[name]
    assert (r.epochs, backbone_lr(r), r.aug_stop_epoch, r.scales, r.scales_stop_epoch) == \
        (epochs, bb_lr, aug_stop, scales, scales_stop)


def test_shared_values():
    for name, r in RECIPES.items():
        if name in ("demo", "demo_seg") or name in NEW_FAMILIES:  # ours; tests/train/test_recipes_dfine.py
            continue
        if name.endswith("_seg"):  # a segmentation sibling trains with its detector's recipe
            assert r is RECIPES[name[:-len("_seg")]], name
            continue
        assert (r.lr, r.betas, r.weight_decay) == (1e-4, (0.9, 0.999), 1e-4), name
        assert (r.warmup_steps, r.lr_milestones, r.lr_gamma) == (2000, (1000,), 0.1), name
        assert (r.ema_decay, r.ema_warmups, r.clip_max_norm) == (0.9999, 2000, 0.1), name
        assert (r.total_batch_size, r.eval_size) == (16, 640), name
        assert r.losses == ("vfl", "boxes") and r.pretrained_backbone, name   # criterion losses, `pretrained: True`
        v1 = name.startswith("rtdetr_")
        assert r.use_amp is not v1, name            # v2 optimizer.yml sets it, v1 keeps runtime.yml's False
        assert r.param_names == ("v1" if v1 else "v2"), name
        assert r.config.endswith(".yml") and r.config.startswith("rtdetr/" if v1 else "rtdetrv2/"), name
        assert (r.tuning is not None) == name.endswith("_dsp"), name


def test_scales_is_the_official_list():
    assert MULTI_SCALES == (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)


# --- parameter groups, by independent rules ----------------------------------------------------

def test_v2_r18_groups():
    """One zero-decay group of every name with 'norm' or 'bn'; everything else in the default group."""
    model = meta_model("rtdetrv2_r18vd")
    groups = build_param_groups(model, get_recipe("rtdetrv2_r18vd"))
    names = group_names(model, groups)

    no_decay = set()
    for n, p in model.named_parameters():
        if "norm" in n or "bn" in n:
            no_decay.add(n)
    assert len(groups) == 2
    assert names[0] == no_decay and groups[0]["weight_decay"] == 0.0 and "lr" not in groups[0]
    assert names[1] == trainable_names(model) - no_decay and set(groups[1]) == {"params"}
    assert "backbone.res_layers.0.blocks.0.branch2a.norm.weight" in names[0]
    assert "backbone.res_layers.0.blocks.0.branch2a.conv.weight" in names[1]
    assert "encoder.fpn_blocks.0.conv1.norm.bias" in names[0]
    assert "decoder.dec_score_head.0.bias" in names[1]      # biases keep their weight decay


def test_v2_r50_groups():
    """Backbone without norms at 1e-5 (frozen stem and frozen BN: no grad, in no group);
    encoder/decoder norms without decay; the rest default."""
    model = meta_model("rtdetrv2_r50vd")
    groups = build_param_groups(model, get_recipe("rtdetrv2_r50vd"))
    names = group_names(model, groups)

    backbone, no_decay, frozen = set(), set(), set()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            frozen.add(n)
        elif n.startswith("backbone.") and "norm" not in n:
            backbone.add(n)
        elif n.startswith(("encoder.", "decoder.")) and ("norm" in n or "bn" in n):
            no_decay.add(n)
    assert frozen == {f"backbone.conv1.conv1_{i}.conv.weight" for i in (1, 2, 3)}
    assert not any("norm" in n for n in trainable_names(model) if n.startswith("backbone."))  # FrozenBN
    assert len(groups) == 3
    assert names[0] == backbone and groups[0]["lr"] == 1e-5
    assert names[1] == no_decay and groups[1]["weight_decay"] == 0.0
    assert names[2] == trainable_names(model) - backbone - no_decay
    assert not frozen & set().union(*names)


def test_v2_r34_groups():
    """Backbone convs at 5e-5, backbone norms at 5e-5 without decay, encoder/decoder norms and
    biases without decay."""
    model = meta_model("rtdetrv2_r34vd")
    groups = build_param_groups(model, get_recipe("rtdetrv2_r34vd"))
    names = group_names(model, groups)

    bb = {n for n in trainable_names(model) if n.startswith("backbone.")}
    bb_norm = {n for n in bb if "norm" in n}
    head_no_decay = {n for n in trainable_names(model) - bb if any(k in n for k in ("norm", "bn", "bias"))}
    assert [len(s) for s in names] == [len(bb - bb_norm), len(bb_norm), len(head_no_decay),
                                       len(trainable_names(model) - bb - head_no_decay)]
    assert names[:3] == [bb - bb_norm, bb_norm, head_no_decay]
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (5e-5, 0.0)


def test_v1_regexes_see_official_v1_names():
    """The v1 model calls encoder.input_proj.N.norm `...N.1`, decoder.enc_output.norm `enc_output.1`:
    their weights do not match 'norm' there and keep weight decay; their biases match 'bias'."""
    model = meta_model("rtdetr_r18vd")
    groups = build_param_groups(model, get_recipe("rtdetr_r18vd"))
    names = group_names(model, groups)
    default, head_no_decay = names[3], names[2]
    for n in ("encoder.input_proj.0.norm.weight", "decoder.enc_output.norm.weight"):
        assert n in default
    for n in ("encoder.input_proj.0.norm.bias", "decoder.enc_output.norm.bias", "decoder.input_proj.0.norm.weight"):
        assert n in head_no_decay
    # backbone norm group first (v1 r18 order), then the rest of the backbone
    assert names[0] == {n for n in trainable_names(model) if n.startswith("backbone.") and "norm" in n}
    assert names[1] == {n for n in trainable_names(model) if n.startswith("backbone.") and "norm" not in n}


def test_v1_names_round_trip_through_the_checkpoint_renames():
    model = meta_model("rtdetr_r18vd")
    ours = [n for n, _ in model.named_parameters()]
    v1 = [official_name(n, "v1") for n in ours]
    assert "encoder.input_proj.2.1.weight" in v1 and "decoder.enc_output.0.bias" in v1
    assert list(normalise_keys(dict.fromkeys(v1, 0))) == ours
    assert official_name("encoder.input_proj.0.norm.weight") == "encoder.input_proj.0.norm.weight"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_trainable_parameter_in_exactly_one_group(name):
    model = meta_model(name)
    recipe = get_recipe(name)
    names = group_names(model, build_param_groups(model, recipe))
    flat = [n for s in names for n in s]
    assert len(flat) == len(set(flat))
    assert set(flat) == trainable_names(model)
    assert len(names) in (len(recipe.param_groups), len(recipe.param_groups) + 1)


def test_discrete_sampling_offsets_are_frozen_and_grouped_nowhere():
    model = meta_model("rtdetrv2_r18vd_dsp")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".cross_attn.sampling_offsets." in n for n in frozen)


def test_empty_regex_group_is_kept():
    """v1 r50: the backbone-norm group matches nothing (frozen BN) but keeps its place."""
    model = meta_model("rtdetr_r50vd")
    groups = build_param_groups(model, get_recipe("rtdetr_r50vd"))
    assert len(groups) == 4 and groups[1]["params"] == [] and groups[1]["lr"] == 1e-5


def test_overlapping_regexes_raise():
    recipe = TrainRecipe(param_groups=((r"backbone", {"lr": 1e-5}), (r"norm", {"weight_decay": 0.0})))
    with pytest.raises(ValueError, match=r"matched by two parameter groups: 'backbone' and 'norm'"):
        build_param_groups(meta_model("rtdetrv2_r18vd"), recipe)


def test_no_groups_means_one_default_group():
    model = meta_model("rtdetrv2_r50vd")
    groups = build_param_groups(model, TrainRecipe())
    assert len(groups) == 1 and len(groups[0]["params"]) == len(trainable_names(model))


def test_make_optimizer():
    model = meta_model("rtdetrv2_r50vd")
    opt = make_optimizer(model, get_recipe("rtdetrv2_r50vd"))
    assert isinstance(opt, torch.optim.AdamW)
    settings = [(g["lr"], g["weight_decay"], g["betas"]) for g in opt.param_groups]
    assert settings == [(1e-5, 1e-4, (0.9, 0.999)), (1e-4, 0.0, (0.9, 0.999)), (1e-4, 1e-4, (0.9, 0.999))]


def test_optimizer_steps_on_a_real_model():
    """AdamW accepts the groups (an empty one included) and updates the trainable weights."""
    model = rtdetr.create_model("rtdetr_r50vd")
    opt = make_optimizer(model, get_recipe("rtdetr_r50vd"))
    head = model.decoder.dec_score_head[0].bias
    stem = model.backbone.conv1.conv1_1.conv.weight
    before_head, before_stem = head.detach().clone(), stem.detach().clone()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    opt.step()
    assert not torch.equal(head, before_head) and torch.equal(stem, before_stem)
