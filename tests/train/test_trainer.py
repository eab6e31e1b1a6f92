"""The trainer on the built-in synthetic data: exact resume, interruption, early stopping,
the run folder, fine-tuning to new classes, and option checking."""
from __future__ import annotations

import csv

import pytest
import torch

import rtdetr
from rtdetr.data import load_dataset, make_synthetic_dataset
from rtdetr.train.config import TrainConfig
from rtdetr.train.build import initial_weights, split_groups
from rtdetr.train.loaders import augment_config
from rtdetr.train.recipes import get_recipe
from rtdetr.train.resolve import effective_config
from rtdetr.train.trainer import Trainer, train

SMALL = dict(model="demo", imgsz=128, batch=4, workers=0, seed=0, exist_ok=True, lr=4e-4, warmup_steps=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=1, num_train=12, num_val=4,
                                  image_size=(128, 128))


def step_losses(run_dir) -> list[tuple[int, str]]:
    with open(run_dir / "steps.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


def final_weights(run_dir) -> dict:
    return torch.load(run_dir / "weights" / "last.pt", weights_only=True)["model"]


def test_resume_gives_the_same_steps_as_an_uninterrupted_run(data, tmp_path):
    whole = train(data=str(data), epochs=2, project=str(tmp_path), name="whole", **SMALL)
    # The same run, stopped twice (mid-epoch 0, then mid-epoch 1) and resumed each time.
    train(data=str(data), epochs=2, project=str(tmp_path), name="parts", max_steps=2, **SMALL)
    train(data=str(data), epochs=2, project=str(tmp_path), name="parts", max_steps=4, resume=True, **SMALL)
    parts = train(data=str(data), epochs=2, project=str(tmp_path), name="parts", resume=True, **SMALL)

    expected = step_losses(whole.run_dir)
    assert [s for s, _ in expected] == list(range(1, 7))
    assert step_losses(parts.run_dir) == expected
    a, b = final_weights(whole.run_dir), final_weights(parts.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert parts.epochs_run == 2


def test_an_interrupted_run_leaves_a_loadable_last_and_resumes(data, tmp_path):
    def interrupt_at_step_2(ctx):
        if ctx.step == 2:
            raise KeyboardInterrupt
        return {}

    cfg = TrainConfig.from_kwargs(data=str(data), epochs=1, project=str(tmp_path), name="cut", **SMALL)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, extra_losses=[interrupt_at_step_2]).fit()
    last = tmp_path / "cut" / "weights" / "last.pt"
    state = torch.load(last, weights_only=True)["trainer"]
    assert (state["global_step"], state["step_in_epoch"]) == (2, 2)
    model = rtdetr.load_model(last)  # a checkpoint of ours: architecture and class names inside
    assert model.class_names == load_dataset(data, "train").class_names

    result = train(data=str(data), epochs=1, project=str(tmp_path), name="cut", resume=True, **SMALL)
    assert [s for s, _ in step_losses(result.run_dir)] == [1, 2, 3]


def test_run_folder_and_early_stopping(data, tmp_path):
    kwargs = {**SMALL, "lr": 0.0}  # nothing learns, so AP50:95 never improves after epoch 1
    result = train(data=str(data), epochs=5, patience=1, project=str(tmp_path), name="stop", **kwargs)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 0
    run = result.run_dir
    for name in ("args.yaml", "results.csv", "steps.csv", "loss.png", "ap.png", "weights/best.pt", "weights/last.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "lr", "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"} <= set(rows[0])
    best = rtdetr.load_model(run / "weights" / "best.pt")
    assert best.num_classes == 3


def test_unknown_options_are_errors():
    with pytest.raises(TypeError, match="unknown training option.*epoch"):
        TrainConfig.from_kwargs(data="x", epoch=3)


def test_fine_tuning_keeps_rows_of_classes_with_coco_names(tmp_path):
    torch.manual_seed(0)
    coco = rtdetr.create_model("rtdetrv2_r18vd")
    file = tmp_path / "coco.pth"
    torch.save({"ema": {"module": coco.state_dict()}}, file)

    names = ["car", "widget", "person"]  # COCO labels 2 and 0, and a new class
    model = rtdetr.create_model("rtdetrv2_r18vd", num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(data="unused", model="rtdetrv2_r18vd", weights=str(file))
    kept = initial_weights(cfg, model, names)
    assert kept == ["car", "person"]

    got, old = model.state_dict(), coco.state_dict()
    for key in ("decoder.enc_score_head.weight", "decoder.dec_score_head.2.bias", "decoder.denoising_class_embed.weight"):
        assert torch.equal(got[key][0], old[key][2]) and torch.equal(got[key][2], old[key][0])
        assert torch.equal(got[key][1], fresh[key][1])
    assert torch.equal(got["decoder.denoising_class_embed.weight"][3], fresh["decoder.denoising_class_embed.weight"][3])
    assert torch.equal(got["backbone.conv1.conv1_1.conv.weight"], old["backbone.conv1.conv1_1.conv.weight"])


def test_model_train_fine_tunes_the_model_itself(data, tmp_path):
    torch.manual_seed(0)
    model = rtdetr.load_model("demo", weights=None, num_classes=3)
    start = {k: v.clone() for k, v in model.model.state_dict().items()}
    kwargs = {k: v for k, v in SMALL.items() if k not in ("model", "lr")}
    steps = []
    result = model.train(data=str(data), epochs=1, max_steps=1, project=str(tmp_path), name="own", lr=0.0,
                         extra_losses=[lambda ctx: steps.append(ctx.step) or {}], **kwargs)
    assert steps == [0]  # Detector.train passes extra losses through to the run
    trained = torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)["model"]
    # lr 0: the run started from (and kept) this model's weights, not a fresh initialisation.
    assert all(torch.equal(trained[k], v) for k, v in start.items() if "running_" not in k
               and "num_batches" not in k)
    assert model.source == str(result.run_dir / "weights" / "last.pt")  # the detector now holds the run's weights


def test_backbone_lr_override_splits_every_group():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = [{"params": [a, b], "weight_decay": 0.0}, {"params": [c]}]
    out = split_groups(groups, {id(a), id(c)}, lr=1e-5)
    assert [(g["params"], g.get("lr"), g.get("weight_decay")) for g in out] == [
        ([a], 1e-5, 0.0), ([b], None, 0.0), ([c], 1e-5, None)]


def test_multiscale_sizes_follow_the_training_size():
    def scales(**kwargs):
        cfg = effective_config(TrainConfig(data="x", **kwargs))
        return augment_config(cfg, get_recipe(cfg.recipe)).scales

    official = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
    assert scales(model="rtdetrv2_r50vd") == scales(model="rtdetrv2_r50vd", imgsz=(640, 640)) == official
    assert scales(model="rtdetrv2_r50vd", imgsz=(320, 320)) == (224, 256, 288, 352, 384, 320, 320, 320)
    assert scales(model="rtdetrv2_r50vd", multiscale=False) is None
    assert scales(model="rtdetrv2_r18vd") is None                  # the r18 v2 configs set `scales: ~`
    assert scales(model="rtdetrv2_r18vd", multiscale=True) == official


def test_augment_config_needs_an_effective_configuration():
    with pytest.raises(ValueError, match="needs an effective configuration"):
        augment_config(TrainConfig(data="x"), get_recipe("rtdetrv2_r50vd"))


def test_time_budget_plans_the_epochs_that_fit(data):
    """time= (hours): after each epoch the plan is budget // mean epoch time, never below the
    epochs done, and the cosine schedule is fitted to the plan."""
    from rtdetr.train.schedule import LRSchedule
    trainer = Trainer(TrainConfig.from_kwargs(data=str(data), epochs=12, time=10 / 60, lr_schedule="cosine", **SMALL))
    trainer.schedule = LRSchedule(warmup_steps=0, kind="cosine", epochs=12)
    trainer.state["epoch"] = 1
    trainer.plan_epochs(60.0)                        # 600 s / 60 s per epoch
    assert trainer.state["epochs"] == trainer.schedule.epochs == 10
    trainer.state["epoch"] = 2
    trainer.plan_epochs(90.0)                        # mean 75 s: 600 // 75
    assert trainer.state["epochs"] == 8 and trainer.state["train_seconds"] == 150.0
    # Half-way through the plan, the lr is half-way down the cosine.
    assert trainer.schedule.factor(100, 4) == pytest.approx(0.05 + 0.95 * 0.5)
    trainer.state["epoch"] = 3
    trainer.plan_epochs(600.0)                       # over budget: stop after the epochs done
    assert trainer.state["epochs"] == 3
    no_budget = Trainer(TrainConfig.from_kwargs(data=str(data), epochs=12, **SMALL))
    no_budget.state["epoch"] = 1
    no_budget.plan_epochs(60.0)
    assert no_budget.state["epochs"] == 12 and no_budget.state["train_seconds"] == 60.0


def test_a_spent_time_budget_stops_after_the_step_and_evaluates(data, tmp_path):
    """A budget far shorter than one step: the run takes that step, stops, and still evaluates
    and saves what it trained; the plan (1 epoch) is in last.pt for a resume."""
    result = train(data=str(data), epochs=5, time=1e-6, project=str(tmp_path), name="budget", **SMALL)
    assert result.epochs_run == 1 and result.best is not None
    state = torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)["trainer"]
    assert state["global_step"] == 1 and state["epochs"] == 1
    assert (result.run_dir / "weights" / "best.pt").is_file()


def test_bf16_autocast_on_a_cpu_without_bf16_says_so(data):
    from rtdetr.core.cpu import detect, set_cpu_capabilities
    from tests.test_cpu import SAPPHIRE_RAPIDS, ZEN3
    cfg = TrainConfig.from_kwargs(data=str(data), amp="bf16", **SMALL)
    try:
        set_cpu_capabilities(detect(ZEN3, "x86_64"))
        with pytest.warns(RuntimeWarning, match=r"without native bf16 \(AVX512_BF16 or AMX-BF16 missing\)"):
            Trainer(cfg)
        set_cpu_capabilities(detect(SAPPHIRE_RAPIDS, "x86_64"))
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            Trainer(cfg)
    finally:
        set_cpu_capabilities(None)


def test_resume_with_more_epochs_continues_to_them(data, tmp_path):
    """Without a time budget the resumed run's `epochs` decides (the saved plan does not)."""
    train(data=str(data), epochs=1, project=str(tmp_path), name="more", **SMALL)
    more = train(data=str(data), epochs=2, project=str(tmp_path), name="more", resume=True, **SMALL)
    assert more.epochs_run == 2
    assert torch.load(more.run_dir / "weights" / "last.pt", weights_only=True)["trainer"]["global_step"] == 6


def test_extra_modules_and_losses_reach_the_run_through_train(data, tmp_path):
    """An extra term worth step + 1 whose gradient reaches only the extra module: the run takes the
    same steps as one without it, its logged loss is larger by exactly that term, and the extra
    module is optimised and checkpointed. (Clipping off: it would mix the module's gradient in.)"""
    calls = []

    def probe(ctx):
        calls.append((ctx.epoch, ctx.step, tuple(ctx.images.shape[:2]), len(ctx.targets),
                      ctx.outputs["pred_boxes"].dtype, "loss_vfl" in ctx.losses, ctx.model.cfg.name))
        w = ctx.extra_modules["probe"].weight
        return {"loss_probe": (w - w.detach()).sum() + float(ctx.step + 1)}

    common = dict(data=str(data), epochs=1, max_steps=2, clip_max_norm=0.0, project=str(tmp_path), **SMALL)
    plain = train(name="plain", **common)
    module = torch.nn.Linear(1, 1, bias=False)
    before = module.weight.detach().clone()
    extra = train(name="extra", extra_modules={"probe": module}, extra_losses=[probe], **common)

    assert calls == [(0, 0, (4, 3), 4, torch.float32, True, "demo"), (0, 1, (4, 3), 4, torch.float32, True, "demo")]
    with_term, without = step_losses(extra.run_dir), step_losses(plain.run_dir)
    assert [s for s, _ in with_term] == [s for s, _ in without] == [1, 2]
    for (step, a), (_, b) in zip(with_term, without):
        # The same float64 terms, plus one more: only summation rounding remains.
        assert float(a) - float(b) == pytest.approx(step, abs=1e-9)
    saved = torch.load(extra.run_dir / "weights" / "last.pt", weights_only=True)["extra_modules"]
    assert set(saved) == {"probe.weight"} and not torch.equal(saved["probe.weight"], before)


def test_extra_terms_must_be_new_loss_terms():
    from rtdetr.train.step import _check_extra_terms

    def distill(ctx):
        return {}

    with pytest.raises(ValueError, match=r"extra loss distill returned term 'kd', which does not start with 'loss_'"):
        _check_extra_terms(distill, {"kd": torch.zeros(())}, {"loss_vfl": torch.zeros(())})
    with pytest.raises(ValueError, match="returned term 'loss_vfl', which repeats a criterion term"):
        _check_extra_terms(distill, {"loss_vfl": torch.zeros(())}, {"loss_vfl": torch.zeros(())})
