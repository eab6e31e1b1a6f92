"""Predictions carry the data set's own category ids when the checkpoint stores them."""
from __future__ import annotations

import torch

import rtdetr
from rtdetr.predict import Predictor


def test_checkpoint_category_ids_reach_the_coco_results(tmp_path):
    torch.manual_seed(0)
    net = rtdetr.create_model("demo", num_classes=3)
    path = rtdetr.save_checkpoint(net, tmp_path / "m.pt", class_names=["a", "b", "c"], category_ids=[3, 17, 42])
    model = rtdetr.load_model(path)
    assert model.category_ids == [3, 17, 42]
    predictor = Predictor(model, conf=0.0, imgsz=128)
    result = predictor(torch.rand(3, 128, 160))[0]
    ids = {row["category_id"] for row in result.to_coco(image_id=1, category_ids=predictor.category_ids)}
    assert ids and ids <= {3, 17, 42}
