"""The `Detector` facade: the pure nn.Module inside, the metadata beside it, and the verbs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rtdetr
from rtdetr import Detector
from rtdetr.bench import run_benchmark
from rtdetr.cli.app import main
from rtdetr.data import load_dataset, make_synthetic_dataset
from rtdetr.models.weights import extract_state_dict, read_checkpoint

NAMES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=1, num_train=8, num_val=4,
                                  image_size=(128, 128))


@pytest.fixture
def det() -> Detector:
    torch.manual_seed(0)
    return rtdetr.load_model("demo", weights=None)


def test_load_model_gives_a_detector_over_the_pure_module(det):
    assert isinstance(det, Detector) and isinstance(det.model, rtdetr.RTDETR)
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        a, b = det(x), det.model(x)
    assert set(a) == {"pred_logits", "pred_boxes"} and all(torch.equal(a[k], b[k]) for k in a)
    assert det.cfg is det.model.cfg and det.num_classes == 3 and det.decoder is det.model.decoder
    # The module knows nothing of prediction, export or training; `train` is PyTorch's mode switch.
    assert not any(hasattr(det.model, verb) for verb in ("predict", "export", "val", "save"))
    assert det.model.train() is det.model and not det.model.train(False).training
    with pytest.raises(TypeError):
        det.model.train(data="somewhere")


def test_save_and_load_round_trip(det, tmp_path):
    det.class_names, det.category_ids = NAMES, [3, 17, 42]
    path = det.save(tmp_path / "sub" / "m.pt", epoch=4)
    back = rtdetr.load_model(path)
    assert (back.class_names, back.category_ids, back.source) == (NAMES, [3, 17, 42], str(path))
    assert read_checkpoint(path)["epoch"] == 4
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(back(x)["pred_boxes"], det.eval()(x)["pred_boxes"])


def test_predict_uses_the_detectors_class_names(det):
    det.class_names = NAMES
    picture = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    result = det.predict(picture, imgsz=128, conf=0.0)[0]
    assert len(result.scores) == 300 and set(result.class_names) <= set(NAMES)


def test_runtime_options_are_for_exported_models_only():
    with pytest.raises(ValueError, match=r"precision= is for exported models .*demo runs in PyTorch"):
        rtdetr.load_model("demo", weights=None, precision="bf16")


def test_after_training_the_detector_holds_the_runs_best_weights(data, tmp_path):
    """(That the run starts from the detector's weights: tests/train/test_trainer.py.)"""
    torch.manual_seed(0)
    det = Detector(rtdetr.create_model("demo", num_classes=3))
    start = {k: v.clone() for k, v in det.model.state_dict().items()}
    result = det.train(data, epochs=1, max_steps=2, imgsz=128, batch=4, workers=0, seed=0,
                       project=str(tmp_path), name="own", exist_ok=True)
    weights = result.run_dir / "weights"
    best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    saved = extract_state_dict(read_checkpoint(best))
    assert all(torch.equal(det.model.state_dict()[k], v) for k, v in saved.items())
    assert not all(torch.equal(start[k], v) for k, v in saved.items())  # (the run changed them: norms' statistics)
    assert det.class_names == load_dataset(data, "train").class_names and det.source == str(best)


def test_a_trained_checkpoint_is_run_at_the_size_it_was_trained_at(data, tmp_path):
    """As Ultralytics' checkpoints: predict, val, serve, export and benchmark default to the training size,
    not 640 (at which a model trained at 128 finds little); a model without a run has none."""
    from rtdetr.eval.validate import input_size
    from rtdetr.predict import Predictor
    torch.manual_seed(0)
    det = Detector(rtdetr.create_model("demo", num_classes=3))
    assert det.default_imgsz is None and Predictor(det).imgsz == (640, 640)
    det.train(data, epochs=1, max_steps=1, imgsz=(96, 128), batch=4, workers=0, seed=0,
              project=str(tmp_path), name="size", exist_ok=True)
    assert det.trained_imgsz == (96, 128)
    for loaded in (rtdetr.load_model(det.source), rtdetr.load_model(det.save(tmp_path / "again.pt"))):
        assert loaded.default_imgsz == (96, 128)
        assert Predictor(loaded).imgsz == (96, 128)
        assert Predictor(loaded, imgsz=160).imgsz == (160, 160)          # a given size still wins
        assert input_size(loaded.model, None, loaded.trained_imgsz) == (96, 128)
    quick = dict(runs=1, warmup=0, threads=1, pause=0, log=None)
    assert run_benchmark(loaded, ["torch"], **quick).imgsz == (96, 128)
    assert run_benchmark(loaded, ["torch"], imgsz=160, **quick).imgsz == (160, 160)   # a given size wins
    out = tmp_path / "bench.json"
    assert main(["benchmark", str(det.source), "--paths", "torch", "--runs", "1", "--warmup", "0",
                 "--threads", "1", "--pause-ms", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["imgsz"] == [96, 128]


def test_val_of_the_detector_equals_val_of_its_checkpoint(det, data, tmp_path):
    det.class_names = load_dataset(data, "val").class_names
    direct = det.val(data, imgsz=128, workers=0)
    from_file = rtdetr.val(det.save(tmp_path / "m.pt"), data, imgsz=128, workers=0)
    assert direct.to_dict() == from_file.to_dict()
