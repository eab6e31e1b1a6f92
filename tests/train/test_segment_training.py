"""Training a segmentation model: masks flow from the data set to the loss, mask AP is logged
and picks the best epoch, the run resumes exactly, and a detector's weights start a seg model."""
from __future__ import annotations

import csv

import pytest
import torch

import rtdetr
from rtdetr.data import make_synthetic_dataset
from rtdetr.train.build import initial_weights, make_criterion
from rtdetr.train.config import TrainConfig
from rtdetr.train.recipes import get_recipe
from rtdetr.train.resolve import effective_config
from rtdetr.train.trainer import train

SMALL = dict(model="demo_seg", imgsz=128, batch=4, workers=0, seed=0, exist_ok=True, lr=4e-4, warmup_steps=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=2, num_train=8, num_val=4,
                                  image_size=(128, 128))


def test_a_segmentation_run_logs_mask_ap_and_saves_a_mask_model(data, tmp_path):
    result = train(data=str(data), epochs=2, project=str(tmp_path), name="seg", **SMALL)
    with open(result.run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert float(row["loss_mask"]) > 0 and float(row["loss_dice"]) > 0
        assert 0 <= float(row["mask_ap50"]) <= 1 and row["mask_ap"] != ""
    # The best epoch is the one with the best mask AP50:95 (the fitness of a segmentation run).
    best = max(range(2), key=lambda i: float(rows[i]["mask_ap"]))
    assert result.best_epoch == best
    assert result.best.segm is not None and result.best.segm.ap == pytest.approx(float(rows[best]["mask_ap"]))
    model = rtdetr.load_model(result.run_dir / "weights" / "best.pt")
    assert model.model.mask_head is not None
    shown = model.predict(str(data / "val"), conf=0.0, max_det=5, imgsz=128)
    assert all(r.masks is not None and r.masks.data.shape == (5, 128, 128) for r in shown)


def test_resume_is_exact_with_masks(data, tmp_path):
    whole = train(data=str(data), epochs=1, project=str(tmp_path), name="whole", **SMALL)
    train(data=str(data), epochs=1, project=str(tmp_path), name="parts", max_steps=1, **SMALL)
    parts = train(data=str(data), epochs=1, project=str(tmp_path), name="parts", resume=True, **SMALL)
    a = torch.load(whole.run_dir / "weights" / "last.pt", weights_only=True)["model"]
    b = torch.load(parts.run_dir / "weights" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_detectors_weights_start_a_segmentation_model(tmp_path):
    torch.manual_seed(0)
    detector = rtdetr.create_model("demo")
    file = tmp_path / "demo.pth"
    torch.save({"model": detector.state_dict(), "rtdetr": {"class_names": ["a", "b", "c"]}}, file)
    seg = rtdetr.create_model("demo_seg")
    own_head = {k: v.clone() for k, v in seg.mask_head.state_dict().items()}
    initial_weights(TrainConfig(data="unused", model="demo_seg", weights=str(file)), seg, ["a", "b", "c"])
    got = seg.state_dict()
    assert all(torch.equal(got[k], v) for k, v in detector.state_dict().items())
    assert all(torch.equal(got[f"mask_head.{k}"], v) for k, v in own_head.items())  # left as it was


def test_the_criterion_of_a_segmentation_run_has_the_recipes_mask_terms():
    cfg = effective_config(TrainConfig(data="unused", model="demo_seg"))
    recipe = get_recipe("demo_seg")
    criterion = make_criterion(cfg, recipe, 3, task="segment")
    assert "masks" in criterion.losses
    assert (criterion.weight_dict["loss_mask"], criterion.weight_dict["loss_dice"]) == recipe.mask_weights
    assert (criterion.matcher.cost_mask, criterion.matcher.cost_dice) == recipe.mask_weights
    detection = make_criterion(effective_config(TrainConfig(data="unused", model="demo")), get_recipe("demo"), 3)
    assert "masks" not in detection.losses and detection.matcher.cost_mask == 0


def test_the_facade_says_what_a_model_does(tmp_path):
    seg, det = rtdetr.load_model("demo_seg", weights=None), rtdetr.load_model("demo", weights=None)
    assert (seg.task, det.task) == ("segment", "detect")
    assert "masks" in repr(seg) and "masks" not in repr(det)
