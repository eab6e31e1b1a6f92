"""What a short run prints: no matplotlib legend warning for an epoch without AP, and a
validation split without objects says so instead of COCO's -1 (which must not drive the best
epoch, EMA restarts or early stopping)."""
from __future__ import annotations

import json
import warnings

from rtdetr.cli.app import main
from rtdetr.data import make_synthetic_dataset
from rtdetr.train.logger import RunLogger
from rtdetr.train.stopping import record_validation


def test_an_epoch_without_validation_plots_without_a_legend_warning(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.epoch({"epoch": 1, "loss": 1.0, "loss_vfl": 0.5, "lr": 1e-4, "weights": "", "time_s": 1.0})
        logger.epoch({"epoch": 2, "loss": 0.9, "loss_vfl": 0.4, "lr": 1e-4, "weights": "ema", "time_s": 1.0,
                      "ap": 0.2, "ap50": 0.4, "ap75": 0.1})
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "ap.png").stat().st_size > 0


def test_an_undefined_ap_counts_neither_way():
    state = {"best_ap": None, "best_epoch": None, "bad_epochs": 0}
    assert record_validation(state, -1.0, 0, 0.0, patience=1) == (False, False)
    assert state == {"best_ap": None, "best_epoch": None, "bad_epochs": 0}
    assert record_validation(state, 0.1, 1, 0.0, patience=1) == (True, False)
    assert record_validation(state, -1.0, 2, 0.0, patience=1) == (False, False)  # no bad epoch: no stop
    assert state == {"best_ap": 0.1, "best_epoch": 1, "bad_epochs": 0}


def test_a_validation_split_without_objects_says_so(tmp_path, capsys):
    root = make_synthetic_dataset(tmp_path / "ds", num_train=2, num_val=2, image_size=(64, 64))
    path = root / "annotations" / "instances_val.json"
    d = json.loads(path.read_text())
    d["annotations"] = []
    path.write_text(json.dumps(d))
    status = main(["train", "--data", str(root), "--model", "demo", "--epochs", "1", "--imgsz", "160",
                   "--batch", "2", "--workers", "0", "--no-pretrained-backbone", "--patience", "1",
                   "--project", str(tmp_path / "runs"), "--name", "t"])
    out = capsys.readouterr().out
    assert status == 0
    assert "epoch 1: no objects in the validation split to score (2 images)\n" in out
    assert "-1.0000" not in out and "AP50:95" not in out
    weights = tmp_path / "runs" / "t" / "weights"
    assert f"no validation scored, so no best.pt; the weights are in {weights / 'last.pt'}" in out
    assert not (weights / "best.pt").exists() and (weights / "last.pt").exists()
