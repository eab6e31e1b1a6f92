"""Every fixture model reproduces the official outputs (tests/fixtures/README.md).

Weights come from the deterministic recipe, keyed by the *official* names, and go through
the official-checkpoint path (`{'ema': {'module': sd}}` file -> `load_model`). Queries are
compared as a set: near-tied encoder scores may legitimately swap two queries' order.
"""
from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import rtdetr
from rtdetr.checkpoint import normalise_keys
from rtdetr.coco import COCO_CATEGORY_IDS
from rtdetr.nn.postprocess import postprocess
from tests.recipe import OFFICIAL, load_reference, recipe_image, recipe_state_dict

FIXTURE_MODELS = sorted(p.name.removesuffix(".json") for p in OFFICIAL.glob("*.json"))
TOL = 1e-4


def match_queries(ref: torch.Tensor, ours: torch.Tensor) -> float:
    """Pair each reference row with one row of ours, one to one (min-cost assignment of the
    L-inf distances), and return the largest paired distance. ref, ours: [Q, D]."""
    dist = torch.cdist(ref.double(), ours.double(), p=float("inf"))
    rows, cols = linear_sum_assignment(dist.numpy())
    return dist[rows, cols].max().item()


def run_fixture_model(name: str, tmp_path) -> tuple[dict, dict, dict]:
    ref = load_reference(name)
    # An official release file: EMA layout, official key names, no computed buffers.
    file = tmp_path / f"{name}.pth"
    torch.save({"ema": {"module": recipe_state_dict(ref["state_dict_manifest"])}}, file)
    model = rtdetr.load_model(name, weights=file)
    file.unlink()
    x = recipe_image(ref["input"]["recipe_image_seed"], ref["input"]["h"], ref["input"]["w"])
    with torch.no_grad():
        out = model(x)
    expected = torch.load(OFFICIAL / f"{name}.outputs.pt")
    return out, expected, ref


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_outputs_match_official(name, tmp_path):
    out, expected, ref = run_fixture_model(name, tmp_path)
    assert out["pred_logits"].shape == expected["pred_logits"].shape == (1, 300, 80)
    ours = torch.cat([out["pred_logits"][0], out["pred_boxes"][0]], dim=1)
    theirs = torch.cat([expected["pred_logits"][0], expected["pred_boxes"][0]], dim=1)
    max_diff = match_queries(theirs, ours)
    print(f"{name}: max abs difference {max_diff:.3g}")
    assert max_diff < TOL

    # Post-processed detections: same (COCO category id, score, box) triples, boxes in pixels.
    w, h = ref["orig_target_size_wh"]
    det = postprocess(out, torch.tensor([[w, h]]), category_ids=COCO_CATEGORY_IDS)[0]
    ours = torch.cat([det["labels"][:, None].double() * 10, det["scores"][:, None] * 1e3, det["boxes"] / max(w, h)], 1)
    theirs = torch.cat([expected["labels"][:, None].double() * 10, expected["scores"][:, None] * 1e3,
                        expected["boxes"] / max(w, h)], 1)
    # Labels are scaled far apart so that pairs can only form within a class.
    det_diff = match_queries(theirs, ours)
    assert det_diff < TOL * 1e3


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_state_dict_follows_official_naming(name):
    """Our keys and shapes are the official ones (v2 names), less the buffers we compute."""
    manifest = load_reference(name)["state_dict_manifest"]
    official = normalise_keys({k: torch.empty(shape, device="meta") for k, shape in manifest.items()})
    own = rtdetr.create_model(name).state_dict()
    assert {k: list(v.shape) for k, v in own.items()} == {k: list(v.shape) for k, v in official.items()}


def test_parameter_counts_match_official():
    for name in FIXTURE_MODELS:
        n = sum(p.numel() for p in rtdetr.create_model(name).parameters())
        assert n == load_reference(name)["num_params"], name
