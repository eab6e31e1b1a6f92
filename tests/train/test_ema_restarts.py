"""EMA restarts ("stage 2"): the decay that is in effect, the reloads of the best stage-1 state,
and exact resume across them; and the one-line error of a non-finite loss."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from rtdetr.data import make_synthetic_dataset
from rtdetr.train.config import TrainConfig
from rtdetr.train.ema import ModelEMA
from rtdetr.train.step import non_finite_message
from rtdetr.train.trainer import Trainer, train

# 8 images of 4 per step: 2 steps per epoch; restarts from epoch 1 of 3.
SMALL = dict(model="demo", imgsz=96, batch=4, workers=0, seed=0, exist_ok=True, lr=4e-4, warmup_steps=2,
             epochs=3, ema_decay=0.999, ema_restart_epoch=1, ema_restart_decay=0.9)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=4, num_train=8, num_val=2,
                                  image_size=(96, 96))


def test_the_ema_uses_the_decay_it_is_given_and_saves_it():
    """d(n) = decay (1 - e^(-n / warmups)): with decay set to 0.5, warmups 1, one update of a
    weight 0 towards 1 gives 1 - d = 1 - 0.5 (1 - e^-1) = 0.683939721."""
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(1.0)
    ema = ModelEMA(model, decay=0.9, warmups=1)
    ema.module.weight.data.fill_(0.0)
    ema.decay = 0.5
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.683939721, abs=1e-7)  # float32 weight
    state = ema.state_dict()
    assert (state["decay"], state["updates"]) == (0.5, 1)
    other = ModelEMA(model, decay=0.9999)
    other.load_state_dict(state)
    assert (other.decay, other.updates) == (0.5, 1)
    other.load_state_dict({"module": state["module"], "updates": 3})  # a checkpoint from before the decay was saved
    assert (other.decay, other.updates) == (0.5, 3)


def run_with_spies(data, tmp_path, name, **kwargs):
    """A run that records, at each restart, (epoch, steps into it, EMA decay after it, whether the
    model then equals the saved stage-1 state, that state's epoch), and the decay at every step."""
    restarts, decays = [], []
    trainer = None

    def probe(ctx):
        decays.append((ctx.epoch, round(trainer.ema.decay, 6)))
        return {}

    trainer = Trainer(TrainConfig.from_kwargs(data=str(data), project=str(tmp_path), name=name, **SMALL, **kwargs),
                      extra_losses=[probe])
    restart = trainer.restart_from_best_stage1

    def spy(decay):
        restart(decay)
        saved = torch.load(trainer.run_dir / "weights" / "best_stage1.pt", weights_only=True)
        now = trainer.model.state_dict()
        same = all(torch.equal(v, now[k]) for k, v in saved["model"].items())
        same &= saved["optimizer"]["state"].keys() == trainer.optimizer.state_dict()["state"].keys() and all(
            torch.equal(saved["optimizer"]["state"][i]["exp_avg"], trainer.optimizer.state_dict()["state"][i]["exp_avg"])
            for i in saved["optimizer"]["state"])
        restarts.append((trainer.state["epoch"], trainer.state["step_in_epoch"], round(trainer.ema.decay, 6), same,
                         saved["epoch"]))

    trainer.restart_from_best_stage1 = spy
    trainer.fit()
    return trainer, restarts, decays


def test_restart_at_the_epoch_then_after_each_epoch_that_is_no_new_best(data, tmp_path):
    """min_delta 1: no AP50:95 gain can exceed it, so only epoch 0 is a best. Epoch 1 starts from
    epoch 0's state with decay 0.9; epochs 1 and 2 are no new best: each reloads it again, with the
    decay 1e-4 lower."""
    trainer, restarts, decays = run_with_spies(data, tmp_path, "never", min_delta=1.0)
    assert restarts == [(1, 0, 0.9, True, 0), (1, 2, 0.8999, True, 0), (2, 2, 0.8998, True, 0)]
    assert decays == [(0, 0.999), (0, 0.999), (1, 0.9), (1, 0.9), (2, 0.8999), (2, 0.8999)]
    last = torch.load(trainer.run_dir / "weights" / "last.pt", weights_only=True)
    assert last["ema"]["decay"] == pytest.approx(0.8998, abs=1e-12)  # 0.9 - 2e-4 in float64
    assert torch.load(trainer.run_dir / "weights" / "best.pt", weights_only=True)["epoch"] == 0


def test_no_reload_after_an_epoch_that_is_a_new_best(data, tmp_path):
    """min_delta -1: every epoch is a new best, so only the restart at epoch 1 reloads, and the
    decay stays 0.9."""
    trainer, restarts, decays = run_with_spies(data, tmp_path, "always", min_delta=-1.0)
    assert restarts == [(1, 0, 0.9, True, 0)]
    assert [d for e, d in decays if e >= 1] == [0.9] * 4
    assert torch.load(trainer.run_dir / "weights" / "best.pt", weights_only=True)["epoch"] == 2


def step_losses(run_dir):
    with open(run_dir / "steps.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


def test_resume_is_exact_across_the_restarts(data, tmp_path):
    """Stopped at the end of epoch 0's steps (before its validation saved the stage-1 state), and
    inside epoch 1 (after its restart), then resumed: the same steps, weights and decay."""
    common = dict(data=str(data), project=str(tmp_path), min_delta=1.0, **SMALL)
    whole = train(name="whole", **common)
    train(name="parts", max_steps=2, **common)
    train(name="parts", max_steps=3, resume=True, **common)
    parts = train(name="parts", resume=True, **common)
    assert step_losses(parts.run_dir) == step_losses(whole.run_dir) and len(step_losses(whole.run_dir)) == 6
    a = torch.load(whole.run_dir / "weights" / "last.pt", weights_only=True)
    b = torch.load(parts.run_dir / "weights" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])
    assert a["ema"]["decay"] == b["ema"]["decay"] and a["ema"]["updates"] == b["ema"]["updates"]


def test_restarts_are_off_without_a_restart_epoch(data, tmp_path):
    result = train(data=str(data), project=str(tmp_path), name="off", **{**SMALL, "ema_restart_epoch": None,
                                                                        "epochs": 2, "min_delta": 1.0})
    assert not (result.run_dir / "weights" / "best_stage1.pt").exists()
    assert torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)["ema"]["decay"] == 0.999


# ---------------------------------------------------------------- non-finite losses

def test_non_finite_message_names_the_terms_first():
    losses = {"loss_vfl": torch.tensor(0.5), "loss_bbox": torch.tensor(math.nan), "loss_giou_aux_0": torch.tensor(math.inf)}
    loss = sum(losses.values())
    message = non_finite_message(losses, loss, 7)
    assert message == ("non-finite loss term(s) loss_bbox=nan, loss_giou_aux_0=inf at step 7 "
                       "(loss nan; terms: loss_vfl=0.5, loss_bbox=nan, loss_giou_aux_0=inf)")
    finite = {"loss_a": torch.tensor(3e38), "loss_b": torch.tensor(3e38)}          # float32 overflow of the sum
    assert non_finite_message(finite, finite["loss_a"] + finite["loss_b"], 2).startswith(
        "the sum of the loss terms is inf at step 2")


def test_a_non_finite_term_stops_the_run_with_its_name(data, tmp_path):
    def broken(ctx):
        return {"loss_broken": torch.tensor(math.nan)}

    cfg = TrainConfig.from_kwargs(data=str(data), project=str(tmp_path), name="nan", **SMALL)
    with pytest.raises(FloatingPointError, match=r"^non-finite loss term\(s\) loss_broken=nan at step 0 \(loss nan"):
        Trainer(cfg, extra_losses=[broken]).fit()
