"""The effective configuration of a run: recipe values where nothing was given, the user's
values where they were, and the run folder's args.yaml recording both.

Expected recipe values are the ones tests/train/test_recipes.py reads off the official config
files (OFFICIAL per model, SHARED by all), not values taken from the code under test."""
from __future__ import annotations

import pytest
import torch
import yaml

import rtdetr
from rtdetr.data import make_synthetic_dataset
from rtdetr.models.zoo import DEMO_MODEL
from rtdetr.train.config import TrainConfig
from rtdetr.train.resolve import args_yaml, effective_config, resolve
from rtdetr.train.trainer import Trainer
from tests.train.test_recipes import OFFICIAL

# Every official COCO config (include/optimizer.yml, dataloader.yml, runtime.yml, the criterion):
# EMA 0.9999 over 2000 warm-up updates, clip 0.1, 16 images per step, 2000 warm-up steps,
# 640 x 640, AdamW lr 1e-4 and weight decay 1e-4, losses ['vfl', 'boxes'].
SHARED = dict(ema_decay=0.9999, ema_warmups=2000, clip_max_norm=0.1, batch=16, warmup_steps=2000,
              imgsz=(640, 640), lr=1e-4, weight_decay=1e-4, losses=("vfl", "boxes"))

# One per family: v1, v2 r18 (no multi-scale, 120 epochs), v2 r34, v2 r50-m (84 epochs), HGNetv2,
# and the discrete-sampling fine-tunes (12 / 36 epochs).
FAMILIES = ["rtdetr_r18vd", "rtdetr_r101vd", "rtdetrv2_r18vd", "rtdetrv2_r34vd", "rtdetrv2_r50vd_m",
            "rtdetrv2_hgnetv2_l", "rtdetrv2_r18vd_dsp", "rtdetrv2_r34vd_dsp"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=2, num_train=4, num_val=2,
                                  image_size=(96, 96))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_run_takes_the_official_recipe_values(name, data):
    epochs, _, aug_stop, scales, scales_stop = OFFICIAL[name]
    trainer = Trainer(TrainConfig(data=str(data), model=name))
    cfg = trainer.cfg
    assert (cfg.epochs, cfg.aug_stop_epoch, cfg.multiscale, cfg.multiscale_stop_epoch) == \
        (epochs, aug_stop, scales is not None, scales_stop)
    assert {k: getattr(cfg, k) for k in SHARED} == SHARED
    assert trainer.state["epochs"] == epochs          # what the loop runs to
    assert cfg.recipe == name and cfg.pretrained_backbone is True
    assert cfg.amp == "off"                           # on CPU (AMP is fp16 with a CUDA grad scaler)


def test_user_values_override_the_recipe_even_when_falsy():
    given_values = dict(epochs=3, batch=2, imgsz=(320, 320), lr=1e-3, weight_decay=0.0, warmup_steps=0,
                        ema_decay=0.5, ema_warmups=7, clip_max_norm=0.0, losses=("boxes",), aug_stop_epoch=0,
                        multiscale=True, multiscale_stop_epoch=2, amp="bf16", pretrained_backbone=False,
                        recipe="rtdetrv2_r50vd")
    resolved = resolve(TrainConfig(data="x", model="rtdetrv2_r18vd", **given_values))
    assert {k: getattr(resolved.config, k) for k in given_values} == given_values
    assert not set(given_values) & set(resolved.sources)


def test_amp_follows_the_recipe_on_cuda():
    """The v2 configs set use_amp (fp16 autocast + grad scaler, as `tools/train.py --use-amp`);
    the v1 configs do not."""
    assert effective_config(TrainConfig(data="x", model="rtdetrv2_r50vd", device="cuda")).amp == "fp16"
    assert effective_config(TrainConfig(data="x", model="rtdetr_r50vd", device="cuda:1")).amp == "off"


def test_demo_and_own_architectures():
    """The demo keeps its own recipe and the values `rtdetr demo` passes; a ModelConfig of your own
    takes the rtdetrv2_r18vd recipe (120 epochs, augmentation stop at 117). Neither downloads a backbone."""
    demo = effective_config(TrainConfig(data="x", model="demo", epochs=12, time=0.15, imgsz=(224, 224), batch=8,
                                        lr_schedule="cosine", workers=1, seed=0))
    assert (demo.recipe, demo.epochs, demo.time, demo.imgsz, demo.batch, demo.lr_schedule) == \
        ("demo", 12, 0.15, (224, 224), 8, "cosine")
    assert demo.pretrained_backbone is False and demo.multiscale is False
    own = effective_config(TrainConfig(data="x", model=DEMO_MODEL))
    assert (own.recipe, own.epochs, own.aug_stop_epoch) == ("rtdetrv2_r18vd", 120, 117)
    assert own.pretrained_backbone is False
    assert effective_config(TrainConfig(data="x", model=DEMO_MODEL, pretrained_backbone=True)).pretrained_backbone


def test_starting_weights_replace_the_pretrained_backbone():
    tuned = effective_config(TrainConfig(data="x", model="rtdetrv2_r50vd", weights="official"))
    assert tuned.pretrained_backbone is False
    with pytest.raises(ValueError, match="pretrained_backbone=True conflicts with starting from weights=official"):
        resolve(TrainConfig(data="x", model="rtdetrv2_r50vd", weights="official", pretrained_backbone=True))


def test_unknown_loss_name_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^unknown loss\(es\) 'focal'; known: vfl, boxes, mal, local, masks$"):
        resolve(TrainConfig(data="x", losses=("vfl", "focal")))


def test_args_yaml_round_trips_and_marks_recipe_values():
    resolved = resolve(TrainConfig(data="d", model="rtdetrv2_r34vd", epochs=5, lr=2e-4))
    text = args_yaml(resolved)
    assert TrainConfig.from_kwargs(**yaml.safe_load(text)) == resolved.config
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert lines["epochs"] == "epochs: 5" and lines["lr"] == "lr: 0.0002"
    assert lines["aug_stop_epoch"] == "aug_stop_epoch: 117  # recipe"
    assert lines["imgsz"] == "imgsz: [640, 640]  # recipe"
    assert lines["pretrained_backbone"] == "pretrained_backbone: true  # model"
    own = resolve(TrainConfig(data="d", model=DEMO_MODEL))
    assert TrainConfig.from_kwargs(**yaml.safe_load(args_yaml(own))) == own.config  # a ModelConfig, as a mapping


def test_setup_uses_the_effective_values_and_writes_args_yaml(data, tmp_path, monkeypatch):
    """A zoo model without weights: the backbone comes from its pretrained file (a stand-in in the
    cache), and the pieces the loop uses carry the recipe's values."""
    torch.manual_seed(5)
    fake = {k: torch.randn_like(v) if v.is_floating_point() else v
            for k, v in rtdetr.create_model("demo").backbone.state_dict().items()}  # presnet18, as r18vd's
    torch.save(fake, tmp_path / "ResNet18_vd_pretrained_from_paddle.pth")
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))

    trainer = Trainer(TrainConfig(data=str(data), model="rtdetrv2_r18vd", lr=2e-4, workers=0,
                                  project=str(tmp_path), name="run"))
    trainer.setup()
    got = trainer.model.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in fake.items())
    assert all(torch.equal(trainer.ema.module.backbone.state_dict()[k], v) for k, v in fake.items())
    assert (trainer.ema.decay, trainer.ema.warmups) == (0.9999, 2000)
    assert (trainer.schedule.warmup_steps, trainer.schedule.epochs) == (2000, 120)
    assert trainer.train_loader.batch_size == 16
    assert trainer.train_set.transforms.transforms.stop_epoch == 117
    assert trainer.collate.scales == [] and trainer.collate.stop_epoch == 71
    assert trainer.criterion.losses == ("vfl", "boxes")
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {2e-4}  # r18: one lr for all groups

    written = yaml.safe_load((trainer.run_dir / "args.yaml").read_text())
    assert TrainConfig.from_kwargs(**written) == trainer.cfg
    assert (written["epochs"], written["lr"], written["pretrained_backbone"]) == (120, 2e-4, True)


def test_command_line_options_leave_recipe_fields_to_the_recipe():
    import argparse
    from rtdetr.cli.train import add_config_options, config_from_args
    parser = argparse.ArgumentParser()
    add_config_options(parser)
    untouched = config_from_args(parser.parse_args(["--data", "d", "--model", "rtdetrv2_r34vd"]))
    assert untouched == TrainConfig(data="d", model="rtdetrv2_r34vd")
    assert effective_config(untouched).epochs == 120
    given = config_from_args(parser.parse_args([
        "--data", "d", "--epochs", "7", "--imgsz", "320", "--losses", "vfl,boxes", "--no-pretrained-backbone",
        "--no-multiscale", "--clip-max-norm", "0"]))
    assert (given.epochs, given.imgsz, given.losses, given.pretrained_backbone, given.multiscale,
            given.clip_max_norm) == (7, (320, 320), ("vfl", "boxes"), False, False, 0.0)
