"""Training the D-FINE family end to end: an official-layout COCO file fine-tuned to new classes
with the model's own recipe (its losses, union set, flat-cosine schedule, Mosaic policy)."""
from __future__ import annotations

import pytest
import torch
import yaml

import rtdetr
from rtdetr.data import make_synthetic_dataset
from rtdetr.models.weights import load_weights, normalise_keys
from rtdetr.train import HungarianMatcher, RTDETRCriterion
from rtdetr.train.recipes import get_recipe
from rtdetr.train.trainer import train
from tests.nn.test_official_parity import match_queries as set_distance
from tests.recipe import OFFICIAL_V4, load_reference, recipe_image, recipe_state_dict


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=1, num_train=8, num_val=2,
                                  image_size=(160, 160))


def test_fine_tune_an_official_file_to_new_classes(data, tmp_path):
    """Two steps of DEIM-S from an RT-DETRv4 release layout (80 COCO classes) on three new ones:
    the recipe's D-FINE-family settings reach the run, the class rows are new, the rest loaded."""
    file = tmp_path / "rtv4_s.pth"
    official = recipe_state_dict(load_reference("rtv4_hgnetv2_s")["state_dict_manifest"])
    torch.save({"ema": {"module": official}}, file)
    result = train(data=str(data), model="deim_hgnetv2_s", weights=str(file), epochs=2, max_steps=2, batch=2,
                   imgsz=160, multiscale=False, mosaic_epochs=(0, 1), mixup_epochs=(0, 1), workers=0,
                   project=str(tmp_path), name="ft")
    args = yaml.safe_load((result.run_dir / "args.yaml").read_text())
    assert args["losses"] == ["mal", "boxes", "local"] and args["loss_union_set"] is True
    assert args["lr_schedule"] == "flatcosine" and args["loss_gamma"] == 1.5

    model = rtdetr.load_model(result.run_dir / "weights" / "last.pt")
    assert len(model.class_names) == 3 and model.model.num_classes == 3
    assert model.model.cfg.name == "deim_hgnetv2_s"
    sd = torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)["model"]
    assert sd["decoder.enc_score_head.weight"].shape == (3, 256)
    # Two steps at the warm-up's start (lr ~ 1e-11) leave the loaded weights where they were.
    key = "decoder.decoder.layers.0.gateway.gate.weight"
    torch.testing.assert_close(sd[key], official[key], rtol=0, atol=1e-6)
    with torch.no_grad():
        out = model.model(torch.rand(1, 3, 160, 160))
    assert out["pred_logits"].shape == (1, 300, 3) and torch.isfinite(out["pred_boxes"]).all()


def test_training_forward_and_losses_match_official():
    """The official DEIM-S in train mode (batch statistics, denoising queries from torch seed 0) on
    recipe weights, with its criterion as the DEIM config builds it (`official_v4/
    deim_hgnetv2_s.train.pt`): our outputs and all 37 loss terms, from the recipe's criterion."""
    ref = torch.load(OFFICIAL_V4 / "deim_hgnetv2_s.train.pt", weights_only=True)
    sd = recipe_state_dict(load_reference("rtv4_hgnetv2_s")["state_dict_manifest"])
    net = rtdetr.create_model("deim_hgnetv2_s")
    load_weights(net, normalise_keys(sd), "recipe", "deim_hgnetv2_s")
    net.train()
    x = recipe_image(0, 160, 160).repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    recipe = get_recipe("deim_hgnetv2_s")
    criterion = RTDETRCriterion(80, HungarianMatcher(), weight_dict=recipe.loss_weights, gamma=recipe.loss_gamma,
                                losses=recipe.losses, use_union_set=recipe.loss_union_set)
    torch.manual_seed(0)
    out = net(x, targets=ref["targets"])
    losses = criterion(out, ref["targets"])

    # Queries as a set, per image (near-tied encoder scores may swap two selected queries from one
    # CPU's kernels to another's), each query's logits, box, edge logits and pre-box together;
    # the denoising queries come in a fixed order. Float32 rounding alone is large here (train-mode
    # batch norms on these weights): the fixture lies 2.2e-4 from the float64 result of the same
    # model and input, ours 2.1e-4 (AVX-512 kernels) to 2.7e-4 (AVX2); two float32 results may be
    # twice that apart, on opposite sides, so the bound is 1e-3 (measured 2e-5 / 3e-4 from the fixture).
    def rows(o: dict, image: int) -> torch.Tensor:
        return torch.cat([o["pred_logits"][image], o["pred_boxes"][image], o["pred_corners"][image],
                          o["pre_boxes"][image]], dim=1).detach()

    ours = {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"], "pred_corners": out["pred_corners"],
            "pre_boxes": out["pre_outputs"]["pred_boxes"]}
    for image in range(2):
        assert set_distance(rows(ref["outputs"], image), rows(ours, image)) < 1e-3
    torch.testing.assert_close(out["dn_pre_outputs"]["pred_boxes"].detach(), ref["outputs"]["dn_pre_boxes"],
                               rtol=0, atol=1e-3)
    assert sorted(losses) == sorted(ref["losses"]) and len(losses) == 37
    for key, expected in ref["losses"].items():
        # Measured 1e-5 (AVX-512 kernels) and 5.9e-5 (AVX2) relative at most: 3e-4 leaves a 5x margin.
        torch.testing.assert_close(losses[key].detach(), expected, rtol=3e-4, atol=1e-5, msg=key)
